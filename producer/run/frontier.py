"""What the writer of a live run promises the record exporter (records that leave as they
expire, :mod:`flowherd.store.expiry`): where the records go, each batch's oldest packet before
the batch exists, and the *frontier*, the time no later batch holds a packet older than.

The source (a live capture) says how far it has got (:meth:`Frontier.advance`); the frontier
published is the smaller of that and the oldest packet the writer holds but has not sent, and
it only rises. A packet older than the frontier already published is *late*: counted, and in the
run's warnings at the end (its record may be split).
"""

from __future__ import annotations

import time

import numpy as np

from flowherd.models.columns import Columns
from flowherd.models.expiry import RecordsOut
from flowherd.models.keys import RunKeys
from flowherd.store.backend import Store
from flowherd.store.expiry import add_late, declare, note_batch, publish_frontier

#: Seconds between two publications of the frontier.
PUBLISH_S = 0.2


class Frontier:
    def __init__(self, store: Store, keys: RunKeys, out: RecordsOut) -> None:
        self.store, self.keys = store, keys
        self.published = 0  # the frontier published (ns)
        self._source = 0  # how far the source vouches for
        self._published_at = 0.0
        self._late = 0  # late packets not yet counted in Redis
        #: late packets in all
        self.late = 0
        declare(store, keys, out)

    def advance(self, ns: int) -> None:
        """The source will hand over no packet older than ``ns`` from now on."""
        if ns > self._source:
            self._source = ns

    def late_one(self, ts: int) -> None:
        if ts < self.published:
            self._late += 1

    def late_in(self, cols: Columns) -> None:
        if self.published and len(cols):
            self._late += int(np.count_nonzero(cols.ts < self.published))

    def note_batch(self, seq: int, ts_min: int) -> None:
        """Batch ``seq`` is about to exist (before its payload: the watermark waits for it)."""
        note_batch(self.store, self.keys, seq, ts_min)

    def publish(self, held_min: int, force: bool = False) -> None:
        """Publish the frontier (at most every :data:`PUBLISH_S` unless ``force``); ``held_min``:
        the oldest packet the writer holds and has not sent."""
        now = time.monotonic()
        if not force and now - self._published_at < PUBLISH_S:
            return
        self._published_at = now
        if self._late:
            add_late(self.store, self.keys, self._late)
            self.late += self._late
            self._late = 0
        mark = min(self._source, held_min)
        if mark > self.published:
            self.published = mark
            publish_frontier(self.store, self.keys, mark)
