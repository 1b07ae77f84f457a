"""The progress of :func:`flowherd.analyse`: reading, then merging, as rich progress bars.

On a terminal the bars are rich's, live on standard error; in Jupyter the same bars are
rendered to HTML and shown in one output that is updated in place (no widget library needed);
anywhere else (a script whose stderr is a file, a test) nothing is shown.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from flowherd.models.capture import CaptureStatus
from flowherd.producer.run.writer import Progress as ReadProgress
from flowherd.producer.run.writer import ProgressFn

_EVERY = 0.25  # seconds between two renderings in Jupyter


class Bars:
    """The two bars of a run named ``name``; ``show`` False shows nothing."""

    def __init__(self, show: bool, name: str) -> None:
        con = Console(stderr=True)
        self._jupyter = show and con.is_jupyter
        self._live = show and con.is_terminal and not self._jupyter
        self._handle = None
        self._shown = 0.0
        self.bar = Progress(
            TextColumn("[bold]{task.description}[/]"),
            BarColumn(),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            console=con,
            transient=True,
            disable=not self._live,
            auto_refresh=self._live,
        )
        self._read = self.bar.add_task(f"{name}: reading", total=None, note="")
        self._merge = self.bar.add_task(f"{name}: merging", total=None, note="", visible=False)

    def __enter__(self) -> Bars:
        if self._live:
            self.bar.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._show(force=True)
        if self._live:
            self.bar.stop()

    def _show(self, force: bool = False) -> None:
        """Jupyter: render the bars to HTML in one output, at most every few tenths of a s."""
        if not self._jupyter or (not force and time.monotonic() - self._shown < _EVERY):
            return
        from IPython.display import HTML, display

        # a console of its own: in Jupyter rich's would display the bars itself, as text
        devnull = open(os.devnull, "w")  # noqa: SIM115 -- closed below
        rec = Console(record=True, width=110, file=devnull, force_jupyter=False)
        rec.print(self.bar.make_tasks_table(self.bar.tasks))
        text = rec.export_html(inline_styles=True, code_format="<pre>{code}</pre>")
        page = HTML(text)  # type: ignore[no-untyped-call]
        devnull.close()
        if self._handle is None:
            self._handle = display(page, display_id=True)  # type: ignore[no-untyped-call]
        else:
            self._handle.update(page)
        self._shown = time.monotonic()

    def reading(self, check: Callable[[], None] | None) -> ProgressFn:
        """The submit's progress callback; ``check`` (the local workers alive) on each call."""

        def update(p: ReadProgress) -> None:
            size = f"/{p.size / 1e6:,.1f}" if p.size else ""
            note = f"{p.position / 1e6:,.1f}{size} MB  {p.packets:,} packets  {p.batches} batches"
            if p.waiting:
                note += f" (waiting for {p.waiting_for or 'workers'})"
            self.bar.update(
                self._read,
                description=f"reading {os.path.basename(p.source)[:40]}",
                completed=p.position,
                total=p.size or None,
                note=note,
            )
            self._show()
            if check:
                check()

        return update

    def merging(self, st: CaptureStatus) -> None:
        """The follow loop's callback: batches merged of the total."""
        self.bar.update(self._read, visible=False)
        total = st.total_batches
        self.bar.update(
            self._merge,
            visible=True,
            completed=st.batches_done,
            total=total,
            note=f"{st.batches_done}/{total or '?'} batches  {st.packets:,} packets",
        )
        self._show()
