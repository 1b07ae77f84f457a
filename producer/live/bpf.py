"""Classic BPF programs for packet sockets: a pcap filter compiled by libpcap (through scapy)
into raw ``struct sock_filter[]`` bytes, the snap length applied in the kernel, and the
program attached to a socket."""

from __future__ import annotations

import ctypes
import errno
import socket
import struct

from flowherd.producer.live.tpacket import LINKTYPE_ETHERNET, RingError

# --- BPF --------------------------------------------------------------------------------------

SO_ATTACH_FILTER = 26
MAXIMUM_SNAPLEN = 262144  # libpcap's default/maximum snapshot length
_BPF_RET_K = 0x06  # BPF_RET | BPF_K
_SOCK_FILTER = struct.Struct("<HBBI")  # struct sock_filter {code, jt, jf, k}


def accept_all(snaplen: int) -> bytes:
    """A one-instruction program: every frame, cut to ``snaplen`` bytes (0: none: a stop)."""
    return _SOCK_FILTER.pack(_BPF_RET_K, 0, 0, snaplen)


def compile_bpf(
    expr: str, linktype: int = LINKTYPE_ETHERNET, snaplen: int = MAXIMUM_SNAPLEN
) -> bytes:
    """Compile a pcap filter expression into raw ``struct sock_filter[]`` bytes.

    Uses scapy's libpcap binding (needs libpcap installed). Accepting returns are rewritten to
    ``snaplen`` (scapy compiles with 65535, which would cut 64 KiB GRO frames). The filter is
    compiled for a dead handle, so "vlan" primitives test inline tags only, not the tag the
    driver stripped. Raises ValueError on a bad expression, RingError without libpcap.
    """
    try:
        from scapy.arch.common import compile_filter, free_filter
        from scapy.error import Scapy_Exception
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RingError(errno.ENOSYS, f"scapy is needed to compile BPF filters: {e}") from None
    try:
        prog = compile_filter(expr, linktype=linktype)
    except ImportError as e:  # pragma: no cover - libpcap missing
        raise RingError(errno.ENOSYS, f"cannot compile BPF filter: {e}") from None
    except (Scapy_Exception, OSError) as e:
        raise ValueError(f"bad filter {expr!r}: {e}") from None
    try:
        n = prog.bf_len
        raw = ctypes.string_at(prog.bf_insns, n * _SOCK_FILTER.size)
    finally:
        free_filter(prog)
    return _set_bpf_snaplen(raw, snaplen)


def _set_bpf_snaplen(prog: bytes, snaplen: int) -> bytes:
    """Rewrite every non-zero ``ret #k`` of a classic BPF program to ``snaplen``."""
    out = bytearray(prog)
    for off in range(0, len(out), _SOCK_FILTER.size):
        code, jt, jf, k = _SOCK_FILTER.unpack_from(out, off)
        if code == _BPF_RET_K and k != 0:
            _SOCK_FILTER.pack_into(out, off, code, jt, jf, snaplen)
    return bytes(out)


def cap_snaplen(prog: bytes, snaplen: int) -> bytes:
    """Lower every ``ret #k`` above ``snaplen`` to it (kernel-side truncation saves ring)."""
    out = bytearray(prog)
    for off in range(0, len(out), _SOCK_FILTER.size):
        code, jt, jf, k = _SOCK_FILTER.unpack_from(out, off)
        if code == _BPF_RET_K and k > snaplen:
            _SOCK_FILTER.pack_into(out, off, code, jt, jf, snaplen)
    return bytes(out)


def attach_filter(sock: socket.socket, prog: bytes) -> None:
    """Attach raw ``struct sock_filter[]`` bytes with SO_ATTACH_FILTER."""
    n, rem = divmod(len(prog), _SOCK_FILTER.size)
    if rem or not 0 < n <= 4096:
        raise OSError(
            errno.EINVAL, f"BPF program must be 1..4096 instructions, got {len(prog)} bytes"
        )
    insns = ctypes.create_string_buffer(prog, len(prog))
    # struct sock_fprog {unsigned short len; struct sock_filter *filter;}, native layout
    fprog = struct.pack("@HP", n, ctypes.addressof(insns))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
