"""The ``evaluate:`` section of the configuration file: the evaluate service's audiences,
state, transactions and time."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from streamsync.audiences.durations import parse_duration


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
    commit_interval_ms: Duration = Field(default=100, alias="commit_interval")
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
    transaction_timeout_ms: Duration = Field(default=10_000, alias="transaction_timeout")
    session_timeout_ms: Duration = Field(default=10_000, alias="session_timeout")
    revoke_budget_ms: Duration = Field(default=10_000, alias="revoke_budget")
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
        description="Schema id in the Confluent framing of Avro deltas (deltas.format avro).",
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

    @property
    def changelog(self) -> str:
        return self.changelog_topic or f"{self.group_id}.changelog"
