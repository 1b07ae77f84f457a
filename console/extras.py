"""Optional parts of flowherd: a command that needs an extra says which, in one line.

A worker-only host installs ``flowherd`` alone; plots need ``flowherd[plot]`` (matplotlib), the
web view ``flowherd[web]``, Parquet exports ``flowherd[export]``. ::

    require("matplotlib", "plot", "reporter hist")   # before importing
    flowherd.reporter.output.plots
"""

from __future__ import annotations

import importlib.util

from flowherd.models.errors import FlowherdError

#: the extras `make install` (scripts/install.sh) installs
MAKE_INSTALL = frozenset({"plot", "web"})


class MissingExtraError(FlowherdError):
    """A command needs a package of an optional extra that this install lacks."""

    exit_code = 3


def require(module: str, extra: str, feature: str) -> None:
    """Raise :class:`MissingExtraError` unless ``module`` can be imported."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise MissingExtraError(
            f"{feature} needs {module}, which is not installed: "
            f"pip install 'flowherd[{extra}]'"
            + (" (or `make install` in a checkout)" if extra in MAKE_INSTALL else "")
        )
