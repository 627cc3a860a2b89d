"""The ``evaluate:`` section of the configuration file: the evaluate service's audiences,
state, transactions and time."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

from streamsync.audiences.durations import format_duration, parse_duration


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _duration_ms(value: object) -> int:
    """Durations in the configuration are written as in audience files (``100ms``,
    ``5m``); a bare number is not accepted, so ``5`` cannot mean 5 ms by accident."""
    if not isinstance(value, str):
        raise ValueError("a duration is a number with a unit, such as 100ms or 5m")
    ms = parse_duration(value)
    if ms < 0:
        raise ValueError("a duration must not be negative")
    return ms


Duration = Annotated[int, BeforeValidator(_duration_ms)]


#: (lowest, highest) of the timeouts, in ms: what the client and a default broker accept
#: (transaction.max.timeout.ms 15m; group session timeouts 6s..30m).
_BOUNDS = {
    "transaction_timeout_ms": (1_000, 900_000),
    "session_timeout_ms": (6_000, 1_800_000),
    "broker_timeout_ms": (1_000, 7 * 86_400_000),
}


class EvaluateConfig(_Model):
    """The evaluate service: audiences, state, transactions and time.

    Durations are strings with a unit (``100ms``, ``10s``, ``5m``) and are held in
    milliseconds.
    """

    audiences: Path = Field(
        description="Audience file or directory; relative to the configuration file."
    )
    group_id: str = Field(default="streamsync-evaluate", min_length=1)
    state_dir: Path = Field(
        default=Path("state"),
        description="Local state stores (one RocksDB per partition) and this instance's "
        "transactional id; relative to the configuration file. One per process.",
    )
    changelog_topic: str | None = Field(
        default=None,
        description="Compacted changelog of the state stores; default <group_id>.changelog.",
    )
    cache_customers: int = Field(
        default=500_000,
        gt=0,
        description="Customers kept in memory per process (about 1.5 KB each), the most "
        "recently changed; the others are read from the local state store when needed.",
    )
    commit_interval_ms: Duration = Field(default=100, gt=0, alias="commit_interval")
    allowed_lateness_ms: Duration = Field(default=5 * 60_000, alias="allowed_lateness")
    wall_clock: bool = Field(
        default=True,
        description="While every input partition of a task is caught up, advance its "
        "watermark with the wall clock (minus idle_grace) so deadlines fire on time.",
    )
    idle_grace_ms: Duration = Field(default=500, alias="idle_grace")
    dedup_horizon_ms: Duration = Field(
        default=24 * 3_600_000,
        alias="dedup_horizon",
        description="Record ids are remembered (in the state store, not in memory) for "
        "two horizons of event time: a record redelivered within that is a duplicate.",
    )
    # Bounds the client and broker enforce by default, checked here so that a value out
    # of them is one line naming the setting instead of a client error at start-up.
    transaction_timeout_ms: Duration = Field(
        default=10_000,
        alias="transaction_timeout",
        description="1s to 15m (the broker's default transaction.max.timeout.ms).",
    )
    session_timeout_ms: Duration = Field(
        default=10_000,
        alias="session_timeout",
        description="6s to 30m (the broker's default group session timeout bounds).",
    )
    revoke_budget_ms: Duration = Field(default=10_000, gt=0, alias="revoke_budget")
    broker_timeout_ms: Duration = Field(default=60_000, alias="broker_timeout")
    repartition_partitions: int | None = Field(
        default=None,
        gt=0,
        description="Partition count of the repartition topics (and tasks) when every "
        "input topic is repartitioned; otherwise they take the keyed topics' count.",
    )
    repartition_purge_interval_ms: Duration = Field(
        default=30_000,
        alias="repartition_purge_interval",
        description="How often the records of the repartition topics that are consumed "
        "and committed are deleted (Kafka Streams' repartition.purge.interval.ms).",
    )
    repartition_partitioner: Literal["consistent", "murmur2"] = Field(
        default="consistent",
        description="How the producers of the keyed topics partition by key: consistent "
        "(CRC-32, librdkafka's default) or murmur2 (the Java client's default).",
    )
    delta_schema_id: int = Field(
        default=3,
        ge=0,
        le=2**31 - 1,  # 4 bytes in the Confluent framing
        description="Schema id in the Confluent framing of Avro deltas (deltas.format avro).",
    )
    max_keys_per_customer: int = Field(
        default=1_000,
        ge=1,
        description="Keys one per-key fact keeps per customer (products viewed per "
        "product, open tickets, entries of a windowed sum); beyond it the least recent "
        "are dropped, counted in streamsync_customer_keys_dropped_total and written to the "
        "dead-letter topic naming the customer, so one scraper cannot stall a partition.",
    )
    inexact_rebuilds: Literal["allow", "refuse"] = Field(
        default="allow",
        description="When changed audience definitions need history the input topics no "
        "longer hold (see docs/operations.md, 'Changing audiences'): allow (rebuild them "
        "from what is there, say so once per audience and in "
        "streamsync_audience_rebuild_exact) or refuse (exit 1 naming them, state "
        "untouched, so the change can be held).",
    )
    rebuild_timeout_ms: Duration = Field(
        default=1_800_000,
        alias="rebuild_timeout",
        description="How long reading one partition's input history for changed "
        "audiences may take.",
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("transaction_timeout_ms", "session_timeout_ms", "broker_timeout_ms")
    @classmethod
    def _within_bounds(cls, value: int, info: ValidationInfo) -> int:
        low, high = _BOUNDS[str(info.field_name)]
        if not low <= value <= high:
            raise ValueError(
                f"must be between {format_duration(low)} and {format_duration(high)}, "
                f"not {format_duration(value)}"
            )
        return value

    @property
    def changelog(self) -> str:
        return self.changelog_topic or f"{self.group_id}.changelog"
