"""flowherd: the elephant flows of big packet captures, spread over RQ workers.

The package holds the three commands' code by role (each folder at the repository root is one
of these subpackages; ``docs/architecture.md`` draws them):

    flowherd.models     pydantic contracts, the error tree, settings, Redis key names
    flowherd.deploy     Redis connections, the embedded private Redis, queues, deploy files
    flowherd.store      where captures, their state and their flow tables live in Redis
    flowherd.console    what every command shares on the terminal
    flowherd.workers    ``workers``: decode, fold and merge batches
    flowherd.reporter   ``reporter``: tables to rows, analyses, outputs, the web view
    flowherd.producer   ``producer``: readers, live capture, the run, trace generators
    flowherd.lab        flowherd on several hosts of one machine (tests and benchmarks)

This module is the home of the Python API: the names in ``__all__`` are public and stable
(``docs/python.md``)::

    import flowherd
    cap = flowherd.analyse("trace.pcap.gz")         # or flowherd.open("trace")
    cap.top(10)                                     # pandas DataFrames, Arrow streams, figures
"""

from __future__ import annotations

from importlib import import_module as _import
from importlib.metadata import PackageNotFoundError as _NotInstalled
from importlib.metadata import version as _version
from typing import TYPE_CHECKING as _TYPE_CHECKING

from flowherd.models.errors import (
    BackendError,
    BatchError,
    CaptureError,
    CaptureStateError,
    FlowherdError,
    TruncatedCaptureError,
)

if _TYPE_CHECKING:
    from flowherd.api import analyse, captures, open
    from flowherd.capture import Capture

try:
    __version__ = _version("flowherd")
except _NotInstalled:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "BackendError",
    "BatchError",
    "Capture",
    "CaptureError",
    "CaptureStateError",
    "FlowherdError",
    "TruncatedCaptureError",
    "__version__",
    "analyse",
    "captures",
    "open",
]

#: the API's names, imported on first use: ``import flowherd.workers`` (a worker, a command)
#: does not pay for the reporter, Redis clients and plotting the API brings in
_LAZY = {"analyse": "flowherd.api", "captures": "flowherd.api", "open": "flowherd.api",
         "Capture": "flowherd.capture"}  # fmt: skip


def __getattr__(name: str) -> object:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'flowherd' has no attribute {name!r}")
    value = getattr(_import(where), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
