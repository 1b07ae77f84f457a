"""Settings shared by every flowherd command, read from ``FLOWHERD_*`` environment variables.

CLI options override them; ``redis_url=None`` means "embedded": a private redis-server under
``home`` and local worker processes, started on demand.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flowherd.models import numbers
from flowherd.models.capture import Engine
from flowherd.models.keys import DEFAULT_QUEUE

#: the longest FLOWHERD_CONNECT_TIMEOUT, in seconds (a day): the retry loop must end
MAX_CONNECT_WAIT = 86400.0
_INTS = (
    "shards",
    "wait_replicas",
    "batch_packets",
    "batch_bytes",
    "max_in_flight",
    "job_timeout",
    "retries",
    "max_payload",
    "keep_windows",
    "heartbeat",
    "maintenance_interval",
)


def default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "flowherd"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLOWHERD_", frozen=True, extra="ignore")

    redis_url: str | None = None
    #: where captures and flow tables live: ``redis://``, ``rediss://``, ``unix://`` or a Redis
    #: Cluster (``redis+cluster://``, ``rediss+cluster://``); None: the Redis of ``redis_url``
    store_url: str | None = None
    #: partitions of each new run's flow table (None: 1 on one Redis, 16 on a cluster)
    shards: int | None = Field(None, ge=1, le=1024)
    #: replicas that must acknowledge every merge (Redis WAIT) before a batch counts as merged
    wait_replicas: int = Field(0, ge=0, le=16)
    queue: str = Field(DEFAULT_QUEUE, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    home: Path = Field(default_factory=default_home)
    batch_packets: int | None = Field(None, ge=1, le=1_000_000)
    batch_bytes: int = Field(4 * 1024 * 1024, ge=1024, le=128 * 1024 * 1024)
    max_in_flight: int = Field(32, ge=1, le=100_000)
    job_timeout: int = Field(600, ge=1, le=30 * 86400)
    retries: int = Field(3, ge=0, le=100)
    #: largest batch payload (and decompressed body) a worker accepts, in bytes; the default
    #: and maximum are flowherd.models.batch.MAX_BODY_BYTES (256 MiB)
    max_payload: int = Field(256 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    compress: bool = False
    #: abort a submission at the first corrupt block of a capture file; by default the records
    #: before it are kept and the run gets a warning, as for a truncated file
    strict: bool = False
    engine: Engine = "scapy"
    #: tumbling window in seconds for per-window flow tables (None: whole capture only)
    window: float | None = Field(None, gt=0)
    #: keep only the newest N windows (None: all); bounds Redis memory of endless captures
    keep_windows: int | None = Field(None, ge=1, le=10**9)
    connect_timeout: float = Field(10.0, ge=0)
    #: seconds a batch's heartbeat lives: a killed worker's batch is re-queued within about
    #: heartbeat + maintenance_interval seconds (RQ counts whole seconds: at least 2)
    heartbeat: int = Field(20, ge=2, le=3600)
    #: seconds between a worker's runs of RQ's registry maintenance (what re-queues them)
    maintenance_interval: int = Field(15, ge=1, le=3600)

    @field_validator(*_INTS, mode="before")
    @classmethod
    def _whole(cls, v: object) -> object:
        """A count in the environment: ASCII digits, bounded (pydantic checks the range)."""
        return numbers.count(v, "a whole number") if isinstance(v, str) else v

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, v: object) -> object:
        """Seconds (``60``, ``0.5``) or a duration (``30s``, ``5m``): finite, at least 1 ns."""
        if isinstance(v, str):
            return numbers.seconds(v, "a window")
        if isinstance(v, int | float):
            return numbers.real(
                float(v), "a window", lo=1e-9, hi=numbers.MAX_DURATION_NS / numbers.NS
            )
        return v

    @field_validator("connect_timeout", mode="before")
    @classmethod
    def _connect(cls, v: object) -> object:
        """Seconds (or a duration), 0 to a day: an endless retry loop is no setting."""
        if isinstance(v, str):
            v = numbers.seconds(v, "a connect timeout", lo_ns=0)
        if isinstance(v, int | float):
            return numbers.real(float(v), "a connect timeout", hi=MAX_CONNECT_WAIT)
        return v

    @property
    def window_ns(self) -> int:
        return round(self.window * 1e9) if self.window else 0

    @property
    def packets_per_batch(self) -> int:
        """``batch_packets``, or by engine: a scapy batch of 2,000 frames is ~0.15 s of work,
        a fast-engine batch of 16,000 about 0.05 s; both keep RQ's per-job cost near 2%."""
        if self.batch_packets is not None:
            return self.batch_packets
        return 16_000 if self.engine == "fast" else 2_000
