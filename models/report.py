"""Report contracts: flow rows in both views, elephant rules and the stored capture report."""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from flowherd.models.capture import BucketCount

SCHEMA_VERSION = 1
T = TypeVar("T", bound=str)

#: The two views of a flow table: unidirectional 5-tuples (NetFlow's) or bidirectional
#: conversations (tshark's ``-z conv``). Every command takes it as ``--direction uni|bi`` and the
#: web view as ``direction=``; below those edges it is this type, under the name ``view``.
View = Literal["uni", "bi"]
VIEWS: tuple[View, ...] = ("uni", "bi")


def one_of(text: str, choices: tuple[T, ...]) -> T:
    """The choice equal to ``text``, typed as the choices are (``View``, ``RankBy``...);
    ValueError naming the choices for anything else. Where text from a user becomes a typed
    value."""
    for c in choices:
        if c == text:
            return c
    names = list(map(str, choices))
    use = " or ".join(names) if len(names) <= 2 else "one of " + ", ".join(names)
    raise ValueError(f"{text[:40]!r}: use {use}")


def parse_view(text: str) -> View:
    """``text`` as a :data:`View`: ``uni`` or ``bi``; ValueError for anything else."""
    return one_of(text, VIEWS)


#: What rows are ranked by (``--by``), and what may be asked of a row's rank.
RankBy = Literal["bytes", "packets", "duration", "rate"]
RANK_BY: tuple[RankBy, ...] = ("bytes", "packets", "duration", "rate")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FlowRow(_Frozen):
    """A unidirectional 5-tuple flow (the classic NetFlow view)."""

    src: str
    dst: str
    proto: int
    sport: int
    dport: int
    packets: int
    bytes: int
    first_ns: int
    last_ns: int
    tcp_flags: int = 0
    #: Community ID v1 (:mod:`flowherd.models.community`); None where the key lacks what it hashes
    community_id: str | None = None

    @property
    def duration_ns(self) -> int:
        return self.last_ns - self.first_ns


class ConvRow(_Frozen):
    """A bidirectional conversation (tshark's ``-z conv`` view). A sent the earliest packet."""

    proto: int
    a_addr: str
    a_port: int
    b_addr: str
    b_port: int
    packets_a_to_b: int
    bytes_a_to_b: int
    packets_b_to_a: int
    bytes_b_to_a: int
    packets: int
    bytes: int
    first_ns: int
    last_ns: int
    #: Community ID v1 (:mod:`flowherd.models.community`); None where the key lacks what it hashes
    community_id: str | None = None

    @property
    def duration_ns(self) -> int:
        return self.last_ns - self.first_ns


RuleKind = Literal["top_n", "threshold", "constant_load", "mean_3sigma"]


class ElephantRule(_Frozen):
    """A named definition of an elephant flow.

    * ``top_n``: the ``n`` largest flows by bytes;
    * ``threshold``: flows of at least ``bytes`` bytes, or of at least ``fraction`` of all bytes;
    * ``constant_load``: the fewest largest flows that together carry ``beta`` of the bytes;
    * ``mean_3sigma``: flows larger than the mean flow size plus three standard deviations.
    """

    name: str
    kind: RuleKind
    n: int | None = Field(None, ge=1)
    bytes: int | None = Field(None, ge=0)
    fraction: float | None = Field(None, gt=0, le=1)
    beta: float | None = Field(None, gt=0, le=1)


class ElephantResult(_Frozen):
    rule: ElephantRule
    description: str
    flows: int
    bytes: int
    share_of_bytes: float
    threshold_bytes: int


HeavyMetric = Literal["duration", "rate", "burst"]
HEAVY_METRICS: tuple[HeavyMetric, ...] = ("duration", "rate", "burst")


class HeavyRule(_Frozen):
    """A named definition of a heavy hitter by another measure than size (Lan & Heidemann).

    ``metric``: ``duration`` (last minus first packet, ns: tortoises), ``rate`` (bytes per
    second over the duration, whole bytes/s: cheetahs) or ``burst`` (the most bytes in one
    window, for captures with windows: porcupines). ``kind``: ``mean_sd`` selects flows whose
    measure exceeds the mean plus ``sigmas`` (population) standard deviations; ``threshold``
    those whose measure is at least ``value`` (ns, bytes/s, or bytes/s over a window).
    """

    name: str
    metric: HeavyMetric
    kind: Literal["mean_sd", "threshold"]
    sigmas: float | None = Field(None, gt=0)
    value: int | None = Field(None, ge=0)


class HeavyResult(_Frozen):
    """What a :class:`HeavyRule` selects among the flows that have its measure
    (``population``). ``limit``: the least measure selected by the rule; ``smallest``: the
    least measure of a selected flow (0 if none); ``mean``/``sd``: of the population;
    ``window_ns``: the window width of a burst measure (0 otherwise)."""

    rule: HeavyRule
    description: str
    population: int
    flows: int
    bytes: int
    share_of_bytes: float
    limit: int
    smallest: int
    mean: float
    sd: float
    window_ns: int = 0


class HillFit(_Frozen):
    """The Hill estimator on the ``k`` largest sizes; ``threshold`` is ``x_(k+1)``;
    ``tail_index`` the CCDF exponent ``1/H``, ``alpha = 1 + 1/H`` the density exponent."""

    k: int
    threshold: int
    tail_index: float
    alpha: float
    rule: str


class PowerLawFit(_Frozen):
    """A Clauset-Shalizi-Newman fit (continuous approximation) and Vuong's test against a
    lognormal truncated at ``xmin``: ``llr > 0`` favours the power law, ``p`` its
    significance; ``preferred`` is ``neither`` when ``p >= 0.1``."""

    xmin: float
    alpha: float
    alpha_se: float
    n_tail: int
    ks: float
    lognormal_mu: float
    lognormal_sigma: float
    llr: float
    llr_normalized: float
    p: float
    preferred: Literal["power_law", "lognormal", "neither"]


class TailFit(_Frozen):
    """Tail estimates of the unidirectional flow sizes: fitted on the ``sizes_fitted``
    largest of ``flows`` sizes (all of them when ``complete``)."""

    flows: int
    sizes_fitted: int
    complete: bool
    hill: HillFit | None
    power_law: PowerLawFit | None


class Summary(_Frozen):
    """Totals of a capture. ``packets = counted_packets + sum(not_counted packets)``."""

    packets: int
    bytes: int
    counted_packets: int
    counted_bytes: int
    flows_uni: int
    flows_bi: int
    not_counted: dict[str, BucketCount]
    first_ns: int | None
    last_ns: int | None
    share_top1pct_uni: float
    share_top10_uni: float


class Report(_Frozen):
    """Stored by the report job when the last batch is merged; shown by ``reporter``."""

    v: int = SCHEMA_VERSION
    name: str
    run: str
    generated_ns: int
    complete: bool
    summary: Summary
    top_uni: list[FlowRow]
    top_bi: list[ConvRow]
    elephants: list[ElephantResult]
    warnings: list[str] = []
    heavy: list[HeavyResult] = []
    tail: TailFit | None = None


class WindowSummary(_Frozen):
    """Totals of one tumbling window ``[start_ns, start_ns + width_ns)``."""

    start_ns: int
    width_ns: int
    packets: int
    bytes: int
    flows: int


class PersistentFlow(_Frozen):
    """A flow that was among the top N of several windows (a persistent elephant)."""

    src: str
    dst: str
    proto: int
    sport: int
    dport: int
    windows: list[int]  # start ns of each window it was in the top N of
    bytes: int  # its bytes summed over those windows


#: A row of either view, and a type variable over the two for functions that keep the view.
Row = FlowRow | ConvRow
RowT = TypeVar("RowT", bound=Row)
