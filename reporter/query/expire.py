"""The record exporter: a live capture's flow records leave Redis as they expire, into rotating
files and/or to an IPFIX collector, each exactly once (``reporter records``; ``producer sniff
--records-dir`` runs it beside the capture).

Each step (every ``interval`` seconds) works shard by shard:

1. read the batches merged since the last step (without a gap) and their segments;
2. fold every conversation they touch, and every conversation whose record may be over, behind
   the watermark (:mod:`flowherd.models.expiry`);
3. append the records that are over to the shard's *journal* (a hidden file beside the record
   files): truncate it to its committed length, append, fsync;
4. commit the step in Redis in one MULTI/EXEC (:func:`flowherd.store.expiry.commit`): the
   changed and finished conversations, the absorbed segments deleted, the journal's new length.

A step killed before 4 leaves bytes past the committed length, which the next step truncates:
the step is done again from the same checkpoint. A journal part is *rotated* once it is older
than ``rotate``, and at the end: its committed records are written in the chosen format to a
temporary file, fsynced and renamed to a name fixed by the part (so a rotation done twice
writes the same file), then the checkpoint moves to the next part and the journal is removed.
So every record is in exactly one file, and a file appears whole or not at all.

IPFIX: after each commit the records of the journal not sent yet go to the collector (one
observation domain per shard, the message sequence numbers kept in the checkpoint), then the
checkpoint records what was sent. Killed between the two, the exporter sends those messages
again with the same sequence numbers: UDP gives at least once, and a collector can drop the
repeats by their (domain, sequence).
"""

from __future__ import annotations

import heapq
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from flowherd.console.hostport import parse_hostport
from flowherd.models.errors import FlowherdError
from flowherd.models.expiry import (
    END,
    Open,
    RecordsOut,
    advance,
    journal_entries,
    journal_entry,
)
from flowherd.models.flows import FlowStats
from flowherd.models.keys import RunKeys, ShardKeys
from flowherd.models.records import Timeouts
from flowherd.reporter.output import files as exports
from flowherd.reporter.output import ipfix
from flowherd.store.backend import Store
from flowherd.store.expiry import (
    Checkpoint,
    Frontier,
    absorbed,
    commit,
    frontier,
    load,
    save_checkpoint,
    trim_pending,
)

log = logging.getLogger(__name__)

_EXT = {"ndjson": "ndjson", "csv": "csv", "parquet": "parquet"}


def journal_dir(out: RecordsOut, home: Path, run: str) -> Path:
    """Where the journals of ``run`` live: the records directory, else one under ``home``."""
    return Path(out.dir) if out.dir is not None else home / "journal" / run


def file_name(name: str, shard: int, shards: int, part: int, started_ns: int, fmt: str) -> str:
    """The name of a rotated part: the capture, the UTC time of its first record, the shard
    (with several), the part number."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started_ns // 1_000_000_000))
    s = f".s{shard}" if shards > 1 else ""
    return f"{name}.{stamp}{s}.{part:06d}.{_EXT[fmt]}"


def _append(path: Path, committed: int, data: bytes) -> int:
    """``data`` after the first ``committed`` bytes of ``path`` (anything past them was never
    committed); fsynced. Returns the new length."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size < committed:
            raise FlowherdError(
                f"journal {path} holds {size} bytes, {committed} were committed: it was "
                "truncated or replaced; the records of that part are lost"
            )
        os.ftruncate(fd, committed)
        os.lseek(fd, committed, os.SEEK_SET)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return committed + len(data)


def _read(path: Path, start: int, end: int) -> bytes:
    if end <= start:
        return b""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(end - start)
    except FileNotFoundError:
        data = b""
    if len(data) != end - start:
        raise FlowherdError(
            f"journal {path} holds fewer bytes than were committed: the records of that part "
            "are lost"
        )
    return data


def write_file(pairs: Iterable[tuple[bytes, bytes]], out: RecordsOut, dest: Path) -> int:
    """The records ``pairs`` as file ``dest`` in ``out``'s format, whole or not at all (a
    temporary file, fsynced, renamed); returns the row count."""
    schema = exports.UNI if out.view == "uni" else exports.BI
    rows = exports.records(pairs, out.view)
    tmp = dest.with_name(f".{dest.name}.tmp")
    if out.format == "parquet":
        n = exports.write_parquet(rows, schema, str(tmp))
        fd = os.open(tmp, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    else:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            w = exports.write_csv if out.format == "csv" else exports.write_ndjson
            n = w(rows, schema, f)
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, dest)
    dfd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return n


@dataclass
class _Shard:
    keys: ShardKeys
    cp: Checkpoint
    opens: dict[bytes, Open]
    due: dict[bytes, int] = field(default_factory=dict)
    heap: list[tuple[int, bytes]] = field(default_factory=list)
    encoder: ipfix.Encoder | None = None

    def schedule(self, t: Timeouts, key: bytes, o: Open) -> None:
        d = o.due(t)
        self.due[key] = d
        heapq.heappush(self.heap, (d, key))

    def ready(self, watermark: int) -> set[bytes]:
        """The conversations with something to do at ``watermark``."""
        out: set[bytes] = set()
        heap = self.heap
        while heap and heap[0][0] <= watermark:
            d, k = heapq.heappop(heap)
            if self.due.get(k) == d:
                out.add(k)
        if len(heap) > 4 * len(self.due) + 1024:  # drop the stale entries
            self.heap = [(d, k) for k, d in self.due.items()]
            heapq.heapify(self.heap)
        return out


@dataclass
class StepResult:
    frontier: Frontier
    records: int = 0
    files: list[Path] = field(default_factory=list)


class Exporter:
    """The exporter of one run. Not thread-safe; one exporter per run at a time (the caller
    holds ``reporter records``' lock)."""

    def __init__(
        self,
        store: Store,
        keys: RunKeys,
        name: str,
        out: RecordsOut,
        t: Timeouts,
        home: Path,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.store, self.keys, self.name, self.out, self.t = store, keys, name, out, t
        self.clock = clock
        self.journals = journal_dir(out, home, keys.run)
        self.journals.mkdir(parents=True, exist_ok=True)
        if out.dir is not None:
            Path(out.dir).mkdir(parents=True, exist_ok=True)
        self.shards: list[_Shard] = []
        for sk in keys.all_shards():
            cp, opens = load(store, sk)
            sh = _Shard(sk, cp, opens)
            for k, o in opens.items():
                sh.schedule(t, k, o)
            if out.ipfix is not None:
                sh.encoder = ipfix.Encoder(domain=sk.shard + 1)
                sh.encoder.records = cp.ipfix_records
                sh.encoder.sequence = cp.ipfix_records % (1 << 32)
            self.shards.append(sh)
            self._clean(sh)
        self._sock: socket.socket | None = None

    def _clean(self, sh: _Shard) -> None:
        """Remove the journals of parts rotated before a kill, and temporary files."""
        prefix = f".{self.keys.run}.s{sh.keys.shard}."
        for p in self.journals.glob(prefix + "*.journal"):
            part = p.name[len(prefix) : -len(".journal")]
            if part.isdigit() and int(part) < sh.cp.part:
                p.unlink(missing_ok=True)

    def _journal(self, shard: int, part: int) -> Path:
        return self.journals / f".{self.keys.run}.s{shard}.{part:06d}.journal"

    # -- one step --------------------------------------------------------------------------

    def step(self) -> StepResult | None:
        """Absorb, fold, journal, commit, send and rotate once; None when the run is gone."""
        upto = min(sh.cp.upto for sh in self.shards)
        fr = frontier(self.store, self.keys, upto)
        if fr is None:
            return None
        res = StepResult(fr)
        for sh in self.shards:
            n = self._step_shard(sh, fr)
            if n is None:
                return None
            res.records += n
        trim_pending(self.store, self.keys, min(sh.cp.upto for sh in self.shards))
        final = fr.watermark >= END
        now = self.clock()
        for sh in self.shards:
            if self.out.ipfix is not None:
                self._send(sh)
            cp = sh.cp
            if cp.part_len and (final or now - cp.part_started_ns >= self.out.rotate_ns):
                f = self._rotate(sh)
                if f is not None:
                    res.files.append(f)
        return res

    def _step_shard(self, sh: _Shard, fr: Frontier) -> int | None:
        t, cp = self.t, sh.cp
        seqs = range(cp.upto, max(cp.upto, fr.upto))
        entries, seg_fields = absorbed(self.store, sh.keys, seqs)
        touched: set[bytes] = set()
        for e in entries:
            o = sh.opens.get(e.key)
            if o is None:
                sh.opens[e.key] = o = Open()
            o.absorb(e)
            touched.add(e.key)
        mark = max(fr.watermark, cp.watermark)
        todo = touched | sh.ready(mark)
        changed: dict[bytes, bytes] = {}
        finished: list[bytes] = []
        out: list[tuple[bytes, FlowStats]] = []
        for k in sorted(todo):
            o = sh.opens[k]
            out += [(k, st) for st in advance(t, o, mark)]
            if o.empty:
                del sh.opens[k]
                sh.due.pop(k, None)
                finished.append(k)
            else:
                changed[k] = o.pack()
                sh.schedule(t, k, o)
        new = replace(cp, upto=max(cp.upto, fr.upto), watermark=mark)
        if out:
            out.sort(key=lambda r: (r[1].first, r[0]))
            data = b"".join(journal_entry(k, st) for k, st in out)
            path = self._journal(sh.keys.shard, cp.part)
            new.part_len = _append(path, cp.part_len, data)
            if not cp.part_len:
                new.part_started_ns = self.clock()
            new.records += len(out)
            new.packets += sum(st.packets for _, st in out)
            new.bytes += sum(st.bytes for _, st in out)
        if new == cp and not changed and not finished and not seg_fields:
            return 0
        if not commit(self.store, sh.keys, new, changed, finished, seg_fields):
            return None
        sh.cp = new
        return len(out)

    # -- leaving ---------------------------------------------------------------------------

    def _send(self, sh: _Shard) -> None:
        cp, enc = sh.cp, sh.encoder
        if enc is None or cp.sent >= cp.part_len:
            return
        path = self._journal(sh.keys.shard, cp.part)
        pairs = journal_entries(_read(path, cp.sent, cp.part_len))
        sock = self._socket()
        for m in enc.messages(ipfix.flow_records(pairs), lambda: self.clock() // 1_000_000_000):
            try:
                sock.send(m)
            except OSError as exc:  # e.g. ECONNREFUSED from an earlier datagram: go on
                log.info("event=ipfix_send_error error=%s", exc)
        sh.cp = replace(cp, sent=cp.part_len, ipfix_records=enc.records)
        save_checkpoint(self.store, sh.keys, sh.cp)

    def _socket(self) -> socket.socket:
        if self._sock is None:
            assert self.out.ipfix is not None
            host, port = parse_hostport(self.out.ipfix)
            try:
                family, kind, proto, _, addr = socket.getaddrinfo(
                    host, port, type=socket.SOCK_DGRAM
                )[0]
            except socket.gaierror as exc:
                raise FlowherdError(f"IPFIX collector {self.out.ipfix}: {exc.strerror}") from None
            s = socket.socket(family, kind, proto)
            s.connect(addr)
            self._sock = s
        return self._sock

    def _rotate(self, sh: _Shard) -> Path | None:
        """Close the shard's journal part: write its file (with a records directory), move the
        checkpoint to the next part, remove the journal."""
        cp = sh.cp
        path = self._journal(sh.keys.shard, cp.part)
        dest = None
        if self.out.dir is not None:
            dest = Path(self.out.dir) / file_name(
                self.name,
                sh.keys.shard,
                self.keys.shards,
                cp.part,
                cp.part_started_ns,
                self.out.format,
            )
            write_file(journal_entries(_read(path, 0, cp.part_len)), self.out, dest)
        sh.cp = replace(
            cp,
            part=cp.part + 1,
            part_len=0,
            part_started_ns=0,
            sent=0,
            files=cp.files + (dest is not None),
        )
        save_checkpoint(self.store, sh.keys, sh.cp)
        path.unlink(missing_ok=True)
        return dest

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @property
    def open_count(self) -> int:
        return sum(len(sh.opens) for sh in self.shards)

    def totals(self) -> Checkpoint:
        """What has left so far, summed over the shards."""
        cps = [sh.cp for sh in self.shards]
        return Checkpoint(
            records=sum(c.records for c in cps),
            packets=sum(c.packets for c in cps),
            bytes=sum(c.bytes for c in cps),
            files=sum(c.files for c in cps),
        )
