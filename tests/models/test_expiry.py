"""Records that leave behind a watermark equal the sorted pass, whatever the order of the
batches and of the steps; a late packet still lands in exactly one record."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowherd.models.batch import RawRecord
from flowherd.models.expiry import (
    END,
    Open,
    advance,
    journal_entries,
    journal_entry,
    over,
)
from flowherd.models.flows import FlowKey, FlowStats
from flowherd.models.records import Pkt, Timeouts, decode_chunk, reference_records
from flowherd.workers.fold.segments import batch_segments
from tests.pipeline.test_timeouts import _dissect, _key_pkt, _packet

_BASE = 1_600_000_000_000_000_000
_TICK = 100_000_000


class _Exporter:
    """The exporter's loop, in memory: absorb batches, advance every conversation."""

    def __init__(self, t: Timeouts) -> None:
        self.t = t
        self.open: dict[bytes, Open] = {}
        self.out: dict[bytes, list[FlowStats]] = {}

    def absorb(self, chunks: list[bytes]) -> None:
        for c in chunks:
            for e in decode_chunk(c):
                self.open.setdefault(e.key, Open()).absorb(e)

    def step(self, watermark: int) -> None:
        for k in list(self.open):
            o = self.open[k]
            # a state that went through Redis between two steps is the same state
            o = Open.unpack(o.pack())
            self.out.setdefault(k, []).extend(advance(self.t, o, watermark))
            if o.empty:
                del self.open[k]
            else:
                self.open[k] = o


@settings(max_examples=300, deadline=None)
@given(
    packets=st.lists(_packet, min_size=0, max_size=60),
    idle=st.one_of(st.just(0), st.integers(1, 12)),
    active=st.one_of(st.just(0), st.integers(1, 25)),
    nbatches=st.integers(1, 7),
    seed=st.integers(0, 2**32),
)
def test_records_behind_the_watermark_equal_the_sorted_pass(
    packets: list[tuple[int, int, int, int, int]],
    idle: int,
    active: int,
    nbatches: int,
    seed: int,
) -> None:
    """Batches cut in capture order (each slightly out of order inside), absorbed in any order;
    each step's watermark is the oldest packet of the batches not absorbed yet."""
    t = Timeouts(idle * _TICK, active * _TICK) or Timeouts(idle_ns=1)
    rnd = random.Random(seed)
    recs = sorted(
        (
            RawRecord(_BASE + ts * _TICK, wire, 1, bytes((9 if c == 4 else c, d, f)))
            for ts, c, d, wire, f in packets
        ),
        key=lambda r: r.ts_ns,
    )
    size = max(1, -(-len(recs) // nbatches))
    batches = [recs[i : i + size] for i in range(0, len(recs), size)]
    for b in batches:
        rnd.shuffle(b)
    pending = list(range(len(batches)))
    rnd.shuffle(pending)
    ex = _Exporter(t)
    while pending:
        take = pending[: rnd.randint(1, len(pending))]
        pending = pending[len(take) :]
        for i in take:
            ex.absorb(batch_segments(batches[i], _dissect, t, 1)[0])
        left = [r.ts_ns for i in pending for r in batches[i]]
        ex.step(min(left) if left else END - 1)
    ex.step(END)
    assert not ex.open
    got = {FlowKey.unpack(k): v for k, v in ex.out.items() if v}
    want = reference_records(t, [kp for r in recs if (kp := _key_pkt(r)) is not None])
    assert got == want


def test_a_record_leaves_at_the_watermark_not_before() -> None:
    s = 1_000_000_000
    t = Timeouts(idle_ns=5 * s)
    o = Open()
    recs = [RawRecord(_BASE + x * s, 100, 1, bytes((0, 0, 0))) for x in (0, 1, 2)]
    o.absorb(next(decode_chunk(batch_segments(recs, _dissect, t, 1)[0][0])))
    assert advance(t, o, _BASE + 6 * s) == [] and o.rec is not None  # 4 s after the last
    assert o.due(t) == _BASE + 7 * s
    (rec,) = advance(t, o, _BASE + 7 * s)
    assert (rec.packets, rec.first, rec.last) == (3, _BASE, _BASE + 2 * s)
    assert o.empty


def test_the_active_timeout_ends_a_busy_record() -> None:
    s = 1_000_000_000
    t = Timeouts(idle_ns=5 * s, active_ns=10 * s)
    o = Open(pkts=[Pkt(_BASE + x * s, 0, 100, 0) for x in range(15)])
    (first,) = advance(t, o, _BASE + 10 * s + 1)  # packets 0-9; packet 10 starts the next
    assert first.packets == 10 and o.rec is not None and o.rec.packets == 1
    assert len(o.pkts) == 4 and over(t, o.rec, _BASE + 20 * s)


def test_a_late_packet_is_counted_once() -> None:
    """A packet older than a watermark already used starts a record of its own (or joins the
    open one): never lost, never twice."""
    s = 1_000_000_000
    t = Timeouts(idle_ns=2 * s)
    o = Open(pkts=[], runs=[])
    o.pkts = []
    o.runs = [_run(_BASE, _BASE + s, 2)]
    out = advance(t, o, _BASE + 10 * s)
    o.runs = [_run(_BASE + 3 * s, _BASE + 3 * s, 1)]  # late: older than the last watermark
    out += advance(t, o, _BASE + 11 * s)
    assert [r.packets for r in out] == [2, 1] and o.empty


def _run(first: int, last: int, n: int) -> FlowStats:
    st_ = FlowStats()
    for i in range(n):
        st_.add(0, first if i == 0 else last, 100, 0)
    return st_


@pytest.mark.parametrize("n", [0, 1, 3])
def test_open_state_and_journal_round_trip(n: int) -> None:
    o = Open(rec=_run(5, 9, 2), runs=[_run(20, 30, 3)] * n)
    assert Open.unpack(o.pack()) == o
    p = Open(pkts=[Pkt(1, 1, 60, 0x10)] * n)
    assert Open.unpack(p.pack()) == p
    key = FlowKey(bytes(4), bytes((1, 2, 3, 4)), 6, 1, 2).pack()
    raw = journal_entry(key, _run(5, 9, 2)) * 2
    assert list(journal_entries(raw)) == [(key, _run(5, 9, 2).pack())] * 2
    with pytest.raises(ValueError, match="inside an entry"):
        list(journal_entries(raw[:-3]))
    with pytest.raises(ValueError):
        Open.unpack(b"\x07")
