"""The record exporter beside a sniff: ``reporter records NAME`` as a child process.

It is started once the run has declared where its records go and ends by itself when the
capture has ended and every record has left. It runs in a session of its own and outlives a
killed sniff: once the sniff's lock lapses it writes the records of every batch queued, then
ends (exit status 1, the capture stayed incomplete). The producer imports no reporter code: the
child is started by command, like the local workers.
"""

from __future__ import annotations

import os
import subprocess
import sys

from flowherd.models.errors import BackendError
from flowherd.models.keys import RunKeys
from flowherd.producer.cli.shell import Shell


class RecordsExporter:
    def __init__(self, sh: Shell, name: str) -> None:
        self.sh, self.name = sh, name
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, keys: RunKeys) -> None:
        """Start ``reporter records`` for the run (called once it is declared)."""
        s = self.sh.settings
        env = {**os.environ, "FLOWHERD_REDIS_URL": self.sh.url}
        if s.store_url:
            env["FLOWHERD_STORE_URL"] = s.store_url
        env["FLOWHERD_HOME"] = str(s.home)
        cmd = [sys.executable, "-m", "flowherd.reporter", "records", self.name, "--queue", s.queue]
        # its own session: a terminal's Ctrl-C reaches only the sniff, which stops cleanly; the
        # exporter ends once the capture it writes has ended
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, start_new_session=True)

    def wait(self) -> int:
        """Wait for the exporter to end; its exit status."""
        if self.proc is None:
            raise BackendError("the record exporter was not started")
        return self.proc.wait()
