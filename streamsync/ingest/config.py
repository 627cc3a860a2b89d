"""The ``ingest:`` section of the configuration file: the input topics and how to read
each, where bad records go, the consumer group.

Per-record code never sees these models: :class:`~streamsync.ingest.decoder.Decoder` reads
a :class:`TopicConfig` once and keeps plain attributes. Adding a topic is a configuration
change only: a new entry under ``ingest.topics``. The defaults live here, beside the
models, because the decoders (``identity.py``, ``jsonl.py``) share them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from streamsync.credentials import Credentials
from streamsync.runtime.config import Duration

TopicFormat = Literal["pipelines_json", "webhook_json", "pipelines_avro", "webhook_avro"]
#: Identifier kinds a webhook topic's identity policy may list (``Event.id_kind``).
IdKind = Literal["id", "cio_id", "email", "customer_id"]
DEFAULT_MAX_RECORD_BYTES = 1024 * 1024
#: Default webhook identity policy: ``data.identifiers.id``, then email, then cio_id, and
#: the deprecated ``data.customer_id`` last (see ``streamsync.ingest.identity``).
DEFAULT_WEBHOOK_IDENTITY: tuple[IdKind, ...] = ("id", "email", "cio_id", "customer_id")
#: Default for how far an event time may be ahead of the reference clock: one day.
DEFAULT_MAX_CLOCK_SKEW_S = 24 * 60 * 60
DEFAULT_DEAD_LETTER_TOPIC = "streamsync.dead-letter"
#: Default for how long a schema id the registry did not hold is answered "unknown"
#: before it is asked for again: long enough that a flood of records with a bad id costs
#: one lookup per interval, short enough that a replica that lagged behind a producer's
#: registration is caught up with within seconds.
DEFAULT_UNKNOWN_ID_RETRY_MS = 10_000
#: Default bound on the registry lookups of ids not yet known, per second.
DEFAULT_MAX_LOOKUPS_PER_S = 50


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TopicConfig(_Model):
    """One input topic and how to read it."""

    name: str = Field(min_length=1)
    format: TopicFormat
    framing: Literal["plain", "confluent"] = "plain"
    customer_key: str | None = Field(
        default=None,
        description="Dotted path of the customer key in the record (id_kind 'id'); default "
        "userId for Data Pipelines. On a webhook topic it replaces the identity policy.",
    )
    identity: list[IdKind] | None = Field(
        default=None,
        description="Webhook topics: the identifiers tried in order for the customer key "
        "(data.identifiers.id/email/cio_id, data.customer_id); default id, email, cio_id, "
        "customer_id. Must start with id; customer_id, if listed, comes last.",
    )
    key_is_customer_id: bool = Field(
        default=False,
        description="Use the Kafka message key (UTF-8) when the record has no customer key.",
    )
    repartition: bool = Field(
        default=False,
        description="The topic is not keyed by customer (null or other keys): evaluate "
        "re-keys its events through the internal topic <group_id>.repartition.<name>, "
        "and it is not part of the co-partitioning check.",
    )
    max_record_bytes: int = Field(default=DEFAULT_MAX_RECORD_BYTES, gt=0)
    max_clock_skew_s: int = Field(
        default=DEFAULT_MAX_CLOCK_SKEW_S,
        gt=0,
        le=366 * 24 * 60 * 60,
        description="Records stamped more than this many seconds ahead of the reference "
        "clock (the wall clock; replay: its start) are dead-lettered as bad_timestamp.",
    )

    @model_validator(mode="after")
    def _check(self) -> TopicConfig:
        if self.framing == "confluent" and not self.format.endswith("_avro"):
            raise ValueError("framing 'confluent' applies to Avro formats only")
        if self.customer_key is not None and not all(self.customer_key.split(".")):
            raise ValueError("customer_key must be a dotted path like properties.customer_id")
        if self.identity is not None:
            if self.record_kind != "webhook":
                raise ValueError(
                    "identity applies to webhook topics; Data Pipelines records are keyed by "
                    "userId (or customer_key)"
                )
            if self.customer_key is not None:
                raise ValueError("set identity or customer_key, not both")
            kinds = self.identity
            if not kinds or kinds[0] != "id":
                raise ValueError("identity must start with id (data.identifiers.id)")
            if len(set(kinds)) != len(kinds):
                raise ValueError("identity lists an identifier twice")
            if "customer_id" in kinds[:-1]:
                raise ValueError("customer_id (deprecated by Customer.io) may only come last")
        return self

    @property
    def webhook_identity(self) -> tuple[IdKind, ...]:
        """The webhook identity policy in the order tried."""
        return DEFAULT_WEBHOOK_IDENTITY if self.identity is None else tuple(self.identity)

    @property
    def is_avro(self) -> bool:
        return self.format.endswith("_avro")

    @property
    def record_kind(self) -> Literal["pipelines", "webhook"]:
        return "pipelines" if self.format.startswith("pipelines") else "webhook"


class SchemaRegistryConfig(_Model):
    """A Confluent-compatible Schema Registry for Confluent-framed Avro input."""

    url: str = Field(
        pattern=r"^https?://\S+$",
        description="The registry's base URL (Apicurio: .../apis/ccompat/v7).",
    )
    username: str | None = Field(default=None, min_length=1)
    password_from: Credentials | None = Field(
        default=None, description="HTTP basic auth password: {env: VAR} or {file: PATH}."
    )
    unknown_id_retry_ms: Duration = Field(
        default=DEFAULT_UNKNOWN_ID_RETRY_MS,
        ge=100,
        le=3_600_000,
        alias="unknown_id_retry",
        description="An id the registry did not hold is answered unknown (its records "
        "dead-lettered unknown_schema_id) for this long, then asked for again: a "
        "registry replica that lags behind a producer's registration is caught up with.",
    )
    max_lookups_per_s: int = Field(
        default=DEFAULT_MAX_LOOKUPS_PER_S,
        gt=0,
        le=10_000,
        description="At most this many lookups of ids not yet known a second (a burst of "
        "as many): beyond it an id is answered unknown without asking, so a flood of "
        "bad ids cannot load the registry.",
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _check(self) -> SchemaRegistryConfig:
        if (self.username is None) != (self.password_from is None):
            raise ValueError("schema_registry needs both username and password_from, or neither")
        return self


class IngestConfig(_Model):
    """The ingest stage: input topics, where bad records go, the consumer group."""

    topics: list[TopicConfig] = Field(min_length=1)
    dead_letter_topic: str = Field(default=DEFAULT_DEAD_LETTER_TOPIC, min_length=1)
    group_id: str = Field(default="streamsync-ingest", min_length=1)
    schema_registry_dir: Path | None = Field(
        default=None,
        description="Directory of <id>.avsc files and/or registry.yaml (id -> file); "
        "relative paths are relative to the configuration file.",
    )
    schema_registry: SchemaRegistryConfig | None = Field(
        default=None,
        description="A Confluent-compatible Schema Registry (instead of schema_registry_dir).",
    )

    @model_validator(mode="after")
    def _check(self) -> IngestConfig:
        names = [topic.name for topic in self.topics]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"topics listed twice: {', '.join(duplicates)}")
        if self.dead_letter_topic in names:
            raise ValueError("dead_letter_topic must not be an input topic")
        if self.schema_registry is not None and self.schema_registry_dir is not None:
            raise ValueError("set schema_registry or schema_registry_dir, not both")
        confluent = any(t.framing == "confluent" for t in self.topics)
        if confluent and self.schema_registry_dir is None and self.schema_registry is None:
            raise ValueError(
                "a topic uses the confluent framing but neither schema_registry nor "
                "schema_registry_dir is set"
            )
        return self

    def topic(self, name: str) -> TopicConfig:
        for topic in self.topics:
            if topic.name == name:
                return topic
        raise KeyError(name)
