"""Sources as people keep them: files, directories, glob patterns and URLs, made into the
ordered list of captures a run reads.

::

    found = expand(["day1/", "extra/*.pcap.gz", "https://example.org/trace.pcap.gz"])
    found.sources    # every capture, directories and patterns ordered by first timestamp
    found.skipped    # (path, why) of the files that are not captures, for a warning each

* a file or an ``http://``/``https://`` URL is kept as given, in its place;
* a directory gives every capture file in it (``recursive``: in its subdirectories too);
* a glob pattern (``*``, ``?``, ``[...]``; ``**`` descends) gives the files it matches, for
  when the shell's argument list is too short (quote it).

The captures of one directory or pattern are ordered by their first packet's timestamp (a
capture without packets first, then by path), since rotated files (``tcpdump -G``, capture
appliances) are named in many ways. Files there that are not captures are skipped and listed
in :attr:`Expanded.skipped`, never silently. A directory or pattern without any capture, like a
missing file, is a :class:`~flowherd.models.errors.CaptureError`.
"""

from __future__ import annotations

import glob
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from flowherd.models.errors import CaptureError, TruncatedCaptureError
from flowherd.models.flows import NS
from flowherd.producer.readers import pcap
from flowherd.producer.readers.capture import open_capture
from flowherd.producer.readers.http import is_url


@dataclass(frozen=True)
class Found:
    """A capture found in a directory or by a pattern, with its first timestamp (None when it
    holds no packet)."""

    path: str
    first_ns: int | None


@dataclass
class Expanded:
    """The captures to read, in order, the files skipped (path, why), and the sources that
    were opened and found to be captures here (those of directories and patterns)."""

    sources: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    checked: set[str] = field(default_factory=set)

    def warnings(self) -> list[str]:
        """One line per skipped file."""
        return [f"skipped {path}: {why}" for path, why in self.skipped]


def is_pattern(text: str) -> bool:
    """True when ``text`` is a glob pattern (and not an existing file of that name)."""
    return glob.has_magic(text) and not os.path.exists(text) and not is_url(text)


def _plain_pcap_first(path: str) -> tuple[bool, int | None]:
    """(True, first timestamp or None) for an uncompressed classic pcap, read from its first
    40 bytes alone (the many-small-files case); (False, None) for anything else."""
    try:
        with open(path, "rb", buffering=0) as f:
            head = f.read(pcap.HEADER_LEN + 16)
    except OSError:
        return False, None
    if head[:4] not in pcap.MAGICS or len(head) < pcap.HEADER_LEN:
        return False, None
    header = pcap.parse_header(path, head)  # CaptureError for a linktype that cannot be
    if len(head) < pcap.HEADER_LEN + 16:
        return True, None
    sec, frac = struct.unpack_from(header.endian + "II", head, pcap.HEADER_LEN)
    return True, sec * NS + (frac if header.nanosecond else frac * 1000)


def first_timestamp(path: str) -> int | None:
    """The first record's timestamp (ns) of the capture at ``path``, None when it has none.
    Raises :class:`CaptureError` when it is not a readable capture."""
    plain, first = _plain_pcap_first(path)
    if plain:
        return first
    with open_capture(path) as cap:
        try:
            for block in cap.blocks():
                if len(block):
                    return int(block.ts[0])
        except TruncatedCaptureError:
            return None
    return None


def _files_of(directory: str, recursive: bool) -> list[str]:
    out: list[str] = []
    for root, dirs, files in os.walk(directory, onerror=None):
        dirs.sort()
        out.extend(os.path.join(root, f) for f in sorted(files) if not f.startswith("."))
        if not recursive:
            break
    return out


def _ordered(what: str, paths: Iterable[str], into: Expanded) -> None:
    """Check ``paths``, skip what is not a capture, add the rest by first timestamp."""
    found: list[Found] = []
    for p in paths:
        if os.path.isdir(p):
            continue
        try:
            found.append(Found(p, first_timestamp(p)))
        except CaptureError as exc:
            into.skipped.append((p, exc.problem))
    if not found:
        raise CaptureError(what, "a directory that holds no capture file" if os.path.isdir(what)
                           else "matches no capture file")  # fmt: skip
    found.sort(key=lambda f: (f.first_ns is not None, f.first_ns or 0, f.path))
    into.sources.extend(f.path for f in found)
    into.checked.update(f.path for f in found)


def expand(args: Sequence[str], recursive: bool = False) -> Expanded:
    """The captures named by ``args`` (files, directories, patterns, URLs), in order; see the
    module docstring. Plain files and URLs are not opened here (the run checks them)."""
    out = Expanded()
    for arg in args:
        if is_url(arg):
            out.sources.append(arg)
        elif os.path.isdir(arg):
            _ordered(arg, _files_of(arg, recursive), out)
        elif is_pattern(arg):
            _ordered(arg, sorted(glob.glob(arg, recursive=True)), out)
        else:
            out.sources.append(arg)
    return out
