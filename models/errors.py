"""The one exception tree of flowherd.

    FlowherdError                  every expected failure; CLIs print str(exc) on one line
    ├── CaptureError               an input trace cannot be read (path, format)
    │   └── TruncatedCaptureError  the file ends inside a record; complete records were delivered
    ├── BatchError                 a queued batch payload is refused (size, magic, schema version)
    ├── CaptureStateError          a capture name is unknown, already taken or in the wrong state
    └── BackendError               Redis cannot be reached or refused a command

Per-packet problems are never raised: the dissector files them in a named "not counted" bucket.
"""

from __future__ import annotations


class FlowherdError(Exception):
    """Root of every error flowherd raises on purpose. ``exit_code`` is what a CLI exits with."""

    exit_code = 1


class CaptureError(FlowherdError):
    """An input trace cannot be read: missing, unreadable, not a capture, or corrupt."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class TruncatedCaptureError(CaptureError):
    """The file ends in the middle of a record.

    Raised by a reader *after* it has yielded every complete record, so a consumer can count
    what was read and still tell the user where the file was cut.
    """

    def __init__(self, path: str, offset: int, records: int) -> None:
        self.offset = offset
        self.records = records
        super().__init__(
            path, f"file is truncated at byte offset {offset} (after {records} complete records)"
        )


class BatchError(FlowherdError):
    """A batch payload is refused before dissection (wrong magic, schema version, size)."""


class CaptureStateError(FlowherdError):
    """A capture name is unknown, already exists, or is in a state that forbids the action."""


class BackendError(FlowherdError):
    """Redis is unreachable or answered with an error."""
