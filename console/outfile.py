"""Where every command writes a file: the one rule for ``-o PATH`` (``docs/outputs.md``).

* ``-`` is standard output (never closed here).
* A symbolic link is followed: what is written lands in its final target (a dangling link
  creates its target), and the link itself stays.
* A FIFO, a character or block device or a socket is written into, as ``tee`` would: opened
  for writing, never replaced, never truncated away (``-o /dev/null`` discards, ``-o /dev/full``
  fails with "No space left on device").
* A regular file, or a name that does not exist yet, is written to a temporary file beside it
  (``.NAME.XXXXXX.part``, mode 0666 less the umask) that is renamed over it only when the whole
  output is written: the file appears whole or not at all, and a failed write leaves any
  earlier file of that name as it was.
* A directory, or a path under something that is not a directory, is refused.

Every failure is one :class:`~flowherd.models.errors.FlowherdError` line, ``PATH: what is
wrong``.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from typing import IO, Any, BinaryIO, Literal, TextIO

from flowherd.models.errors import FlowherdError

STDOUT = "-"


class OutputError(FlowherdError):
    """An output path that cannot be written (one line: the path and why)."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fail(path: str, exc: OSError) -> OutputError:
    return OutputError(f"{path}: {exc.strerror or exc}")


def kind_of(path: str) -> tuple[Literal["stdout", "special", "regular", "new"], int]:
    """How :func:`open_text` and :func:`open_binary` treat ``path`` (after following symbolic
    links), and the mode a file written there gets."""
    if path == STDOUT:
        return "stdout", 0
    if "\0" in path:
        raise OutputError(f"{path!r}: a file name cannot hold a NUL character")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "new", 0o666 & ~_umask()
    except OSError as exc:
        raise _fail(path, exc) from None
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{path}: is a directory")
    if stat.S_ISREG(st.st_mode):
        return "regular", stat.S_IMODE(st.st_mode)
    return "special", 0


def open_text(path: str) -> contextlib.AbstractContextManager[TextIO]:
    """A text file (UTF-8, no newline translation) whose content ends up at ``path`` by the
    rules of the module docstring, once the ``with`` block ends without an exception."""
    return _output(path, False)


def open_binary(path: str) -> contextlib.AbstractContextManager[BinaryIO]:
    """:func:`open_text` for bytes."""
    return _output(path, True)


@contextlib.contextmanager
def _output(path: str, binary: bool) -> Iterator[Any]:
    """On an exception a temporary file is removed and the exception propagates (an
    :class:`OSError` as :class:`OutputError`)."""
    kind, perm = kind_of(path)
    if kind == "stdout":
        out: IO[Any] = sys.stdout.buffer if binary else sys.stdout
        try:
            yield out
            out.flush()
        except BrokenPipeError:  # `| head`: the reader has all it wants
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError as exc:
            raise _fail(path, exc) from None
        return
    mode = "wb" if binary else "w"
    text: dict[str, Any] = {} if binary else {"encoding": "utf-8", "newline": ""}
    if kind == "special":
        try:
            fh = open(path, mode, **text)  # noqa: SIM115
        except OSError as exc:
            raise _fail(path, exc) from None
        try:
            yield fh
            fh.close()
        except OSError as exc:
            raise _fail(path, exc) from None
        finally:
            with contextlib.suppress(OSError):
                fh.close()
        return
    target = os.path.realpath(path)
    folder, name = os.path.split(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder or ".")
    except OSError as exc:
        raise _fail(path, exc) from None
    try:
        with os.fdopen(fd, mode, **text) as fh:
            os.fchmod(fd, perm)
            yield fh
        os.replace(tmp, target)
    except OSError as exc:
        raise _fail(path, exc) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
