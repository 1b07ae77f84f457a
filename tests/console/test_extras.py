"""Optional extras: a command whose extra is missing says which to install, in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flowherd.console.extras import MissingExtraError, require

HIDE = "import sys; sys.modules[{mod!r}] = None; "


def test_require_passes_for_an_installed_module() -> None:
    require("json", "plot", "x")  # no exception


def test_require_names_the_extra() -> None:
    with pytest.raises(MissingExtraError, match=r"flowherd\[plot\]") as exc:
        require("no_such_module_here", "plot", "reporter hist")
    assert "reporter hist" in str(exc.value) and exc.value.exit_code == 3
    assert "make install" in str(exc.value)  # it installs the plot extra


def test_require_does_not_promise_what_make_install_lacks() -> None:
    with pytest.raises(MissingExtraError) as exc:
        require("no_such_module_here", "export", "Parquet export")
    assert "flowherd[export]" in str(exc.value) and "make install" not in str(exc.value)


def test_hist_without_matplotlib_is_one_line_and_exit_3() -> None:
    code = HIDE.format(mod="matplotlib") + (
        "from flowherd.reporter.cli.main import main; main(['hist', 'any', '-o', 'x.png'])"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "flowherd[plot]" in lines[0] and "Traceback" not in r.stderr


def test_workers_never_import_matplotlib() -> None:
    """A worker-only install has no matplotlib: the worker's modules must not need it."""
    code = HIDE.format(mod="matplotlib") + (
        "import flowherd.workers.cli, flowherd.workers.jobs, flowherd.reporter.job, flowherd.producer.cli.main; print('ok')"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
