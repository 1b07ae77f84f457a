"""The read loop of a run: capture files, in order, into its writer (for ``producer submit``,
and again for ``--resume`` and the re-sending of lost batches)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from flowherd.models.errors import TruncatedCaptureError
from flowherd.producer.readers.capture import open_capture
from flowherd.producer.run.writer import ProgressFn, RunWriter


def feed(
    w: RunWriter, sources: Sequence[str], on_progress: ProgressFn | None, warned: Collection[str]
) -> None:
    """Read ``sources`` in order into ``w`` and flush its last batch (the run stays open).

    A truncated file contributes its complete records and a run warning (unless ``warned``
    holds that warning already: a second reading); other read errors propagate.
    """
    prog = w.progress
    add = w.add_columns
    for src in sources:
        prog.source = str(src)
        try:
            with open_capture(src) as cap:
                prog.size = cap.size
                for block in cap.blocks():
                    add(block)
                    prog.position = cap.position
                    if on_progress:
                        on_progress(prog)
                prog.position = cap.position
        except TruncatedCaptureError as exc:
            if str(exc) in warned:
                prog.warnings.append(str(exc))
            else:
                w.warn(str(exc))
    w.flush()
