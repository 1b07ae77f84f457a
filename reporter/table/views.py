"""Pure conversions from stored conversation records to the two reported views.

* :func:`uni_rows`: the unidirectional 5-tuple rows of a conversation (one per direction that
  carried packets);
* :func:`conv_row`: the bidirectional row, with A = the sender of the earliest packet (on a
  tie, the smaller ``(address as text, port)``), as tshark's conversation table and the oracle
  define it.

Both carry the flow's Community ID (:func:`flowherd.models.community.flow_community_id`, seed
``seed``, 0 by default): the same for both directions and the conversation.
"""

from __future__ import annotations

from flowherd.models.community import flow_community_id
from flowherd.models.flows import FlowKey, FlowStats, addr_text
from flowherd.models.report import ConvRow, FlowRow


def uni_row(key: FlowKey, st: FlowStats, direction: int, seed: int = 0) -> FlowRow:
    """The row of one direction of a conversation (0: A to B, 1: B to A)."""
    a, b = addr_text(key.a_addr), addr_text(key.b_addr)
    cid = flow_community_id(key.a_addr, key.b_addr, key.proto, key.a_port, key.b_port, seed)
    if direction == 0:
        ends = (a, b, key.a_port, key.b_port)
        counts = (st.pkts_ab, st.bytes_ab, st.first_ab, st.last_ab, st.flags_ab)
    else:
        ends = (b, a, key.b_port, key.a_port)
        counts = (st.pkts_ba, st.bytes_ba, st.first_ba, st.last_ba, st.flags_ba)
    src, dst, sport, dport = ends
    packets, nbytes, first, last, flags = counts
    return FlowRow(
        src=src,
        dst=dst,
        proto=key.proto,
        sport=sport,
        dport=dport,
        packets=packets,
        bytes=nbytes,
        first_ns=first,
        last_ns=last,
        tcp_flags=flags,
        community_id=cid,
    )


def uni_rows(key: FlowKey, st: FlowStats, seed: int = 0) -> list[FlowRow]:
    """One row per direction that carried packets."""
    return [uni_row(key, st, d, seed) for d, n in ((0, st.pkts_ab), (1, st.pkts_ba)) if n]


def conv_row(key: FlowKey, st: FlowStats, seed: int = 0) -> ConvRow:
    a = (addr_text(key.a_addr), key.a_port)
    b = (addr_text(key.b_addr), key.b_port)
    swap = (st.first_ba, b) < (st.first_ab, a) and a != b
    if swap:
        a, b = b, a
        ab = (st.pkts_ba, st.bytes_ba)
        ba = (st.pkts_ab, st.bytes_ab)
    else:
        ab = (st.pkts_ab, st.bytes_ab)
        ba = (st.pkts_ba, st.bytes_ba)
    return ConvRow(
        proto=key.proto,
        a_addr=a[0],
        a_port=a[1],
        b_addr=b[0],
        b_port=b[1],
        packets_a_to_b=ab[0],
        bytes_a_to_b=ab[1],
        packets_b_to_a=ba[0],
        bytes_b_to_a=ba[1],
        packets=st.packets,
        bytes=st.bytes,
        first_ns=st.first,
        last_ns=st.last,
        community_id=flow_community_id(
            key.a_addr, key.b_addr, key.proto, key.a_port, key.b_port, seed
        ),
    )
