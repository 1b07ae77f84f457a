"""The read loop of a run: capture files, in order, into its writer (for ``producer submit``,
and again for ``--resume`` and the re-sending of lost batches)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from flowherd.models.columns import Columns
from flowherd.models.errors import CaptureError, TruncatedCaptureError
from flowherd.producer.readers.capture import open_capture
from flowherd.producer.readers.http import TransferCutError, is_url
from flowherd.producer.readers.small import small_blocks
from flowherd.producer.run.writer import ProgressFn, RunWriter

#: blocks smaller than this (frames) are held and handed to the writer together: a small
#: file's block costs the writer as much as a large one (batches are cut alike either way)
GATHER = 4096


def feed(
    w: RunWriter, sources: Sequence[str], on_progress: ProgressFn | None, warned: Collection[str]
) -> None:
    """Read ``sources`` in order into ``w`` and flush its last batch (the run stays open).

    A truncated file, or one with a corrupt block, contributes the complete records before
    the cut and a run warning (unless ``warned`` holds that warning already: a second
    reading), and reading goes on with the next file; with ``settings.strict`` a corrupt
    block propagates its :class:`CaptureError` (the run is then aborted), as a URL whose
    transfer was cut for good always does. Small
    uncompressed pcap files are read whole (:mod:`flowherd.producer.readers.small`).
    """
    prog = w.progress
    held: list[Columns] = []
    frames = 0

    def add(block: Columns) -> None:
        nonlocal frames
        held.append(block)
        frames += len(block)
        if frames >= GATHER:
            w.add_columns(Columns.concat(held))
            held.clear()
            frames = 0

    for src in sources:
        prog.source = str(src)
        try:
            small = None if is_url(str(src)) else small_blocks(str(src))
            if small is not None:
                prog.size, blocks = small
                for block in blocks:
                    add(block)
                prog.position = prog.size
                if on_progress:
                    on_progress(prog)
                continue
            with open_capture(src) as cap:
                prog.size = cap.size
                for block in cap.blocks():
                    add(block)
                    prog.position = cap.position
                    if on_progress:
                        on_progress(prog)
                prog.position = cap.position
        except CaptureError as exc:
            if held:  # the records before the error count, even when the run stops here
                w.add_columns(Columns.concat(held))
                held.clear()
                frames = 0
            if isinstance(exc, TransferCutError):  # nothing more to read: stop the run
                raise
            if w.settings.strict and not isinstance(exc, TruncatedCaptureError):
                raise
            message = str(exc)
            if not isinstance(exc, TruncatedCaptureError):  # corrupt: the records before it
                message = f"{message} (the records before it are counted; the rest is skipped)"
            if message in warned:
                prog.warnings.append(message)
            else:
                w.warn(message)
    if held:
        w.add_columns(Columns.concat(held))
    w.flush()
