"""Captures served over HTTP(S), streamed without a local copy.

:func:`open_url` gives a buffered binary stream of a URL's body that
:func:`flowherd.producer.readers.capture.open_capture` reads like a file (compression is told by
magic bytes, as for files). When the connection is cut before the body's end (a reset, a
timeout, fewer bytes than ``Content-Length``, a cut chunked body), the stream asks again from
the byte it reached, with ``Range: bytes=N-`` (and ``If-Range``, so a file that changed meanwhile
is not spliced): reading goes on where it stopped. A server that answers that request with the
whole body (no Range support) or not at all ends the read with a one-line
:class:`TransferCutError` (a :class:`~flowherd.models.errors.CaptureError`); the run is then
aborted, whatever the run does with corrupt files, and
``producer submit --resume NAME URL...`` continues it.

Other failures are :class:`CaptureError` too: an HTTP error status, a host that cannot be
reached. Nothing here parses captures.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import logging
import time
import urllib.error
import urllib.request
from typing import Any

from flowherd.models.errors import CaptureError

log = logging.getLogger(__name__)

#: tries to go on after a cut, without a byte gained in between
ATTEMPTS = 5
#: seconds without a byte before a connection counts as cut
TIMEOUT = 30.0
#: bytes the buffered stream asks of the connection at once
BUFFER = 256 * 1024
_FP_HEAD = 1 << 20  # bytes hashed for a URL's fingerprint, as for a file's
_CUT = (http.client.HTTPException, OSError, ValueError)


def is_url(text: str) -> bool:
    """True for an ``http://`` or ``https://`` URL."""
    low = text[:8].lower()
    return low.startswith(("http://", "https://"))


def _request(url: str, start: int, validator: str | None, timeout: float) -> Any:
    headers = {"Accept-Encoding": "identity", "User-Agent": "flowherd"}
    if start:
        headers["Range"] = f"bytes={start}-"
        if validator:
            headers["If-Range"] = validator
    req = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise CaptureError(url, f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, *_CUT) as exc:
        why = getattr(exc, "reason", None) or exc
        raise CaptureError(url, f"cannot open the URL: {why}") from None


class TransferCutError(CaptureError):
    """A URL's transfer was cut and cannot go on where it stopped: unlike a corrupt file,
    nothing after it can be read, so the run stops here (and ``--resume`` continues it)."""


class HttpStream(io.RawIOBase):
    """The body of ``url`` as a raw, non-seekable stream that goes on after a cut (see the
    module docstring). ``tell()`` is the number of body bytes delivered; ``size`` the body's
    length when the server said it (else None)."""

    def __init__(self, url: str, timeout: float = TIMEOUT, attempts: int = ATTEMPTS) -> None:
        super().__init__()
        self.url = url
        self.name = url
        self._timeout = timeout
        self._attempts = attempts
        self._pos = 0
        self.resumed = 0  # connections opened again after a cut
        self._broken: str | None = None  # the response was cut, though it reads as ended
        resp = _request(url, 0, None, timeout)
        self._resp = resp
        self._where = resp.geturl()  # after redirects
        length = resp.headers.get("Content-Length")
        self.size: int | None = int(length) if length and length.isdigit() else None
        self._validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def readinto(self, b: Any) -> int:
        tries = 0
        while True:
            why = "the connection closed early"
            try:
                n = self._resp.readinto(b)
            except http.client.IncompleteRead as exc:
                # a cut chunked body: its complete chunks are in ``b`` already; the response
                # then reads as ended, so remember the cut for the next read
                n, why = len(exc.partial) or -1, "the chunked body was cut"
                self._broken = why
            except _CUT as exc:
                n, why = -1, str(exc) or type(exc).__name__
            if n > 0:
                self._pos += n
                return int(n)
            ended = self.size is None or self._pos >= self.size or not len(b)
            if n == 0 and ended and self._broken is None:
                return 0
            why, self._broken = self._broken or why, None
            tries += 1
            self._again(why, tries)

    def _again(self, why: str, tries: int) -> None:
        """Open the body again at the byte reached, or raise the one-line error."""
        of = f" of {self.size}" if self.size is not None else ""
        cut = f"connection cut at byte {self._pos}{of} ({why})"
        self._resp.close()
        if tries > self._attempts:
            raise TransferCutError(self.url, f"{cut}; gave up after {self._attempts} tries")
        time.sleep(min(0.1 * 2 ** (tries - 1), 2.0))
        log.warning("event=url_cut url=%s offset=%d try=%d why=%s", self.url, self._pos, tries, why)
        try:
            resp = _request(self._where, self._pos, self._validator, self._timeout)
        except CaptureError as exc:
            if exc.problem.startswith("HTTP 416"):  # nothing after the byte reached: the end
                self._resp = _Empty(ended=True)
                return
            if tries >= self._attempts:
                raise TransferCutError(self.url, f"{cut}; {exc.problem}") from None
            self._resp = _Empty()
            return
        if resp.status != 206 or not _starts_at(resp, self._pos):
            resp.close()
            raise TransferCutError(
                self.url,
                f"{cut}, and the server does not resume at a byte offset (no HTTP Range, or the "
                "file changed): `producer submit --resume NAME` reads it again",
            )
        self._resp = resp
        self.resumed += 1

    def close(self) -> None:
        if not self.closed:
            self._resp.close()
        super().close()


class _Empty:
    """A response without a body: ended (reads give nothing), or not (the next read tries
    again)."""

    def __init__(self, ended: bool = False) -> None:
        self._ended = ended

    def readinto(self, b: Any) -> int:
        if self._ended:
            return 0
        raise ConnectionError("no connection")

    def close(self) -> None:
        pass


def _starts_at(resp: Any, pos: int) -> bool:
    rng = resp.headers.get("Content-Range", "")  # bytes START-END/SIZE
    return str(rng).startswith(f"bytes {pos}-")


class UrlFile(io.BufferedReader):
    """A buffered :class:`HttpStream`: what :func:`open_url` returns."""

    raw: HttpStream

    def __init__(self, stream: HttpStream) -> None:
        super().__init__(stream, BUFFER)

    @property
    def content_length(self) -> int | None:
        """The body's length in bytes when the server said it."""
        return self.raw.size


def open_url(url: str) -> UrlFile:
    """Start reading ``url``; :class:`CaptureError` when it cannot be (an HTTP error, an
    unreachable host)."""
    return UrlFile(HttpStream(url))


def fingerprint(url: str) -> str:
    """``size:hash`` of the body at ``url`` (SHA-256 of its first MiB), like a file's: tells
    another body apart without reading it all. Raises :class:`CaptureError`."""
    with open_url(url) as f:
        head = f.read(_FP_HEAD)
        size = f.content_length
    return f"{size if size is not None else '?'}:{hashlib.sha256(head).hexdigest()[:32]}"
