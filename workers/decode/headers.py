"""Layouts of the link and encapsulation headers the walker reads, with dpkt's field names.

A :class:`Layout` is a dpkt ``__hdr__`` table -- ``(field name, struct format)`` pairs in wire
order, network byte order -- from which the header's size and each field's offset are computed
once, at import. The walker (:mod:`flowherd.workers.decode.framing`,
:mod:`flowherd.workers.decode.linktypes`) reads fields at offsets taken from these tables at import
(``_ETH_TYPE = ETHERNET.at("type")``) rather than written as bare numbers, so a header is described
in one place and in the vocabulary of ``kbandla/dpkt`` (``ethernet.py``, ``pppoe.py``, ``ppp.py``,
``llc.py``, ``sll.py``, ``sll2.py``, ``loopback.py``). Headers dpkt has no class for are named in
the same style from their RFC or tshark dissector. Pure data: nothing here reads a frame.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

__all__ = [
    "CHDLC",
    "ETHERNET",
    "ISL",
    "ITAG",
    "LLC",
    "LOOPBACK",
    "MPLS",
    "NFLOG",
    "NFLOG_TLV",
    "PPP",
    "PPPOE",
    "PWACH",
    "PW_CONTROL_WORD",
    "SLL",
    "SLL2",
    "SNAP",
    "VLAN",
    "Layout",
]


@dataclass(frozen=True, slots=True)
class Layout:
    """A fixed header: ``name`` and its dpkt-style ``fields``, ``((name, format), ...)``.

    ``size`` is the header's length in bytes; :meth:`at` gives a field's offset from the start of
    the header. Formats are :mod:`struct` codes read in network byte order without padding.
    """

    name: str
    fields: tuple[tuple[str, str], ...]
    size: int = field(init=False)
    _offsets: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        offsets: dict[str, int] = {}
        pos = 0
        for fname, fmt in self.fields:
            if fname in offsets:
                raise ValueError(f"{self.name}: field {fname!r} appears twice")
            offsets[fname] = pos
            pos += struct.calcsize("!" + fmt)
        object.__setattr__(self, "size", pos)
        object.__setattr__(self, "_offsets", offsets)

    def at(self, name: str) -> int:
        """The offset of field ``name`` from the start of the header. Raises ``KeyError``."""
        return self._offsets[name]


#: Ethernet II / 802.3 (dpkt ``Ethernet``): ``type`` is an ethertype, or an 802.3 length.
ETHERNET = Layout("ethernet", (("dst", "6s"), ("src", "6s"), ("type", "H")))
#: 802.1Q / 802.1ad tag (dpkt ``VLANtag8021Q``): ``type`` is the ethertype it carries.
VLAN = Layout("vlan", (("_pri_cfi_id", "H"), ("type", "H")))
#: Cisco Inter-Switch Link (dpkt ``VLANtagISL``); the high nibble of ``_type_pri`` is the frame
#: type (0: Ethernet), and a whole frame follows the header.
ISL = Layout(
    "isl",
    (
        ("da", "5s"),
        ("_type_pri", "B"),
        ("sa", "6s"),
        ("len", "H"),
        ("snap", "3s"),
        ("hsa", "3s"),
        ("_id_bpdu", "H"),
        ("indx", "H"),
        ("res", "H"),
    ),
)
#: 802.1ah backbone service instance tag (I-TAG); a whole customer Ethernet frame follows.
ITAG = Layout("itag", (("_pri_dei_uca_res_isid", "I"),))
#: One MPLS label stack entry (dpkt ``MPLSlabel``): label 20 bits, exp 3, bottom of stack 1, ttl 8.
MPLS = Layout("mpls", (("_val_exp_s_ttl", "I"),))
#: Pseudowire control word (RFC 4385): first nibble 0, before an Ethernet pseudowire payload.
PW_CONTROL_WORD = Layout("pw_cw", (("_flags_frg_len_seq", "I"),))
#: Pseudowire associated channel header (RFC 4385, tshark ``pwach``): first nibble 1;
#: ``channel_type`` is a PPP DLL protocol number.
PWACH = Layout("pwach", (("_nibble_ver_res", "H"), ("channel_type", "H")))
#: PPPoE (dpkt ``PPPoE``): ``len`` is the length of the PPP frame that follows.
PPPOE = Layout("pppoe", (("_v_type", "B"), ("code", "B"), ("session", "H"), ("len", "H")))
#: PPP in HDLC-like framing (dpkt ``PPP``): ``addr``/``cntrl`` may be absent, and ``p`` is one
#: byte when compressed (low bit set), else two.
PPP = Layout("ppp", (("addr", "B"), ("cntrl", "B"), ("p", "H")))
#: Cisco HDLC (tshark ``chdlc``): an ethertype after an 0x0f/0x8f address byte.
CHDLC = Layout("chdlc", (("addr", "B"), ("cntrl", "B"), ("type", "H")))
#: 802.2 LLC (dpkt ``LLC``) with a one-byte (U-format) control field; I/S-format ones take two.
LLC = Layout("llc", (("dsap", "B"), ("ssap", "B"), ("ctl", "B")))
#: SNAP, after an LLC header with both SAPs 0xaa (dpkt ``LLC.oui``/``LLC.type``).
SNAP = Layout("snap", (("oui", "3s"), ("type", "H")))
#: Linux cooked capture v1, LINKTYPE_LINUX_SLL (dpkt ``SLL``): ``hrd`` is the ARPHRD_ type,
#: ``ethtype`` an ethertype or (<= 1536) a Linux pseudo-protocol.
SLL = Layout(
    "sll",
    (("type", "H"), ("hrd", "H"), ("hlen", "H"), ("hdr", "8s"), ("ethtype", "H")),
)
#: Linux cooked capture v2, LINKTYPE_LINUX_SLL2 (dpkt ``SLL2``).
SLL2 = Layout(
    "sll2",
    (
        ("ethtype", "H"),
        ("mbz", "H"),
        ("intindex", "i"),
        ("hrd", "H"),
        ("type", "B"),
        ("hlen", "B"),
        ("hdr", "8s"),
    ),
)
#: BSD loopback (dpkt ``Loopback``): ``family`` is an address family, in the capturing host's
#: byte order for LINKTYPE_NULL, in network byte order for LINKTYPE_LOOP.
LOOPBACK = Layout("loopback", (("family", "I"),))
#: Linux netfilter NFLOG, LINKTYPE_NFLOG (tshark ``nflog``): ``family`` is an NFPROTO_ value
#: (2 IPv4, 10 IPv6), ``resource_id`` the NFLOG group; TLVs follow.
NFLOG = Layout("nflog", (("family", "B"), ("version", "B"), ("resource_id", "H")))
#: One NFLOG TLV (a netlink attribute): ``length`` counts this header and the value, and the next
#: TLV starts at the next multiple of 4. Both fields are in the capturing host's byte order (the
#: file's, for version 0), unlike everything else here; the top bit of ``type`` is a flag.
NFLOG_TLV = Layout("nflog_tlv", (("length", "H"), ("type", "H")))
