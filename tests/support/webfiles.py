"""A real HTTP file server on the loopback for the URL-source tests (Python's http.server in a
thread), with paths whose connection is cut mid-transfer.

    with FileServer(directory) as srv:
        srv.url("a.pcap")                      # served whole; honours Range
        srv.url("a.pcap", cut=1000, cuts=1)    # the first GET is cut after 1000 bytes
        srv.url("a.pcap", cut=1000, after=2)   # the third GET is cut (the first two are whole)
        srv.url("a.pcap", ranges=False)        # Range ignored: 200 and the whole body
        srv.url("a.pcap", chunked=True)        # Transfer-Encoding: chunked, no length
        srv.requests                           # (path, Range header or None) of each GET

A cut response declares the whole ``Content-Length``, sends ``cut`` bytes of the body (from
where the request started) and closes the connection: what a client sees when a link drops.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        rng = self.headers.get("Range")
        srv = self.server
        with srv.lock:
            srv.requests.append((parts.path, rng))
            key = self.path.split("&n=")[0]
            seen = srv.seen[key] = srv.seen.get(key, 0) + 1
            left = srv.cuts_left.setdefault(key, int(q.get("cuts", "0")))
            late = seen <= int(q.get("after", "0"))
            cut = int(q["cut"]) if "cut" in q and left > 0 and not late else None
            if cut is not None:
                srv.cuts_left[key] = left - 1
        path = srv.root / parts.path.lstrip("/")
        if not path.is_file():
            self.send_error(404, "Not Found")
            return
        body = path.read_bytes()
        start = 0
        status = 200
        if rng and q.get("ranges", "1") == "1" and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            status = 206
        self.send_response(status)
        self.send_header("ETag", f'"{len(body)}"')
        if q.get("ranges", "1") == "1":
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        rest = body[start:]
        chunked = q.get("chunked") == "1"
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        out = rest if cut is None else rest[:cut]
        if chunked:
            for i in range(0, len(out), 4096):
                piece = out[i : i + 4096]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            if cut is None:
                self.wfile.write(b"0\r\n\r\n")
        else:
            try:
                self.wfile.write(out)
            except (BrokenPipeError, ConnectionResetError):  # the client went away
                return
        self.wfile.flush()
        if cut is not None:
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str | None]] = []
        self.cuts_left: dict[str, int] = {}
        self.seen: dict[str, int] = {}


class FileServer:
    """Serves the files of ``root`` on 127.0.0.1 (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self._srv = _Server(root)
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True)

    @property
    def requests(self) -> list[tuple[str, str | None]]:
        return self._srv.requests

    def url(
        self,
        name: str,
        *,
        cut: int | None = None,
        cuts: int = 1,
        after: int = 0,
        ranges: bool = True,
        chunked: bool = False,
    ) -> str:
        q: dict[str, str] = {}
        if cut is not None:
            q.update(cut=str(cut), cuts=str(cuts), after=str(after))
        if not ranges:
            q["ranges"] = "0"
        if chunked:
            q["chunked"] = "1"
        host, port = self._srv.server_address[:2]
        tail = f"?{urlencode(q)}" if q else ""
        return f"http://{host!s}:{port}/{name}{tail}"

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._srv.shutdown()
        self._srv.server_close()
