"""streamsync's configuration file: pydantic models at the edge, validated once at start-up.

Per-record code never sees these models: :class:`~streamsync.ingest.decoder.Decoder` reads
a :class:`TopicConfig` once and keeps plain attributes. Adding a topic is a configuration
change only: a new entry under ``ingest.topics``.

Secrets (the SASL password) are ``SecretStr``: ``repr``/``str`` of any model, and
:meth:`KafkaConfig.redacted`, show ``**********``. Validation errors are reformatted
without the offending input values for the same reason (:class:`ConfigError`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from streamsync.kafka.config import BOOTSTRAP_ENV
from streamsync.observability.config import ObservabilityConfig

TopicFormat = Literal["pipelines_json", "webhook_json", "pipelines_avro", "webhook_avro"]
DEFAULT_MAX_RECORD_BYTES = 1024 * 1024
DEFAULT_DEAD_LETTER_TOPIC = "streamsync.dead-letter"
_REDACTED = "**********"


class ConfigError(ValueError):
    """The configuration file is missing, not YAML, or not valid; the message says where."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TopicConfig(_Model):
    """One input topic and how to read it."""

    name: str = Field(min_length=1)
    format: TopicFormat
    framing: Literal["plain", "confluent"] = "plain"
    customer_key: str | None = Field(
        default=None,
        description="Dotted path of the customer key in the record; default userId for "
        "Data Pipelines, data.customer_id for webhooks.",
    )
    key_is_customer_id: bool = Field(
        default=False,
        description="Use the Kafka message key (UTF-8) when the record has no customer key.",
    )
    max_record_bytes: int = Field(default=DEFAULT_MAX_RECORD_BYTES, gt=0)

    @model_validator(mode="after")
    def _check(self) -> TopicConfig:
        if self.framing == "confluent" and not self.format.endswith("_avro"):
            raise ValueError("framing 'confluent' applies to Avro formats only")
        if self.customer_key is not None and not all(self.customer_key.split(".")):
            raise ValueError("customer_key must be a dotted path like properties.customer_id")
        return self

    @property
    def is_avro(self) -> bool:
        return self.format.endswith("_avro")

    @property
    def record_kind(self) -> Literal["pipelines", "webhook"]:
        return "pipelines" if self.format.startswith("pipelines") else "webhook"


class KafkaConfig(_Model):
    """How to reach the cluster. ``extra`` is passed to librdkafka as is (and wins)."""

    bootstrap_servers: str = Field(default="localhost:9092", min_length=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    extra: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> KafkaConfig:
        if self.security_protocol.startswith("SASL_"):
            if self.sasl_mechanism is None:
                raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
            if self.sasl_username is None or self.sasl_password is None:
                raise ValueError("SASL needs sasl_username and sasl_password")
        return self

    def client_config(self) -> dict[str, Any]:
        """The librdkafka settings shared by every client (contains the secret in clear:
        pass it to confluent-kafka, never log it - log :meth:`redacted` instead)."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism is not None:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            config["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            config["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location is not None:
            config["ssl.ca.location"] = self.ssl_ca_location
        config.update(self.extra)
        return config

    def redacted(self) -> dict[str, Any]:
        """:meth:`client_config` with every secret-looking value masked: safe to print."""
        return {
            key: _REDACTED if ("password" in key or "secret" in key) else value
            for key, value in self.client_config().items()
        }


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

    @model_validator(mode="after")
    def _check(self) -> IngestConfig:
        names = [topic.name for topic in self.topics]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"topics listed twice: {', '.join(duplicates)}")
        if self.dead_letter_topic in names:
            raise ValueError("dead_letter_topic must not be an input topic")
        if self.schema_registry_dir is None and any(t.framing == "confluent" for t in self.topics):
            raise ValueError("a topic uses the confluent framing but schema_registry_dir is unset")
        return self

    def topic(self, name: str) -> TopicConfig:
        for topic in self.topics:
            if topic.name == name:
                return topic
        raise KeyError(name)


DEFAULT_DELTAS_TOPIC = "streamsync.deltas"


class DeltasConfig(_Model):
    """The membership deltas topic: written by ``evaluate``, read by ``deliver``.

    Records are keyed by customer id, so one customer's deltas stay in order.
    """

    topic: str = Field(default=DEFAULT_DELTAS_TOPIC, min_length=1)
    format: Literal["json", "avro"] = Field(
        default="json",
        description="json: the README's JSON form; avro: schemas/membership_delta.avsc in the "
        "Confluent wire format.",
    )


class AppConfig(_Model):
    """The whole configuration file."""

    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    ingest: IngestConfig
    deltas: DeltasConfig = Field(default_factory=DeltasConfig)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)


def _format_errors(error: ValidationError) -> str:
    # Never include ``input``: it may be a password or a customer's data.
    lines = []
    for item in error.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "(root)"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def parse_config(
    data: object,
    *,
    source: str = "<config>",
    base_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> AppConfig:
    """Validate an already-loaded mapping; see :func:`load_config` for the file rules."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    environ = os.environ if env is None else env
    try:
        config = AppConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid configuration\n{_format_errors(exc)}") from None
    bootstrap = environ.get(BOOTSTRAP_ENV, "").strip()
    if bootstrap:
        config = config.model_copy(
            update={"kafka": config.kafka.model_copy(update={"bootstrap_servers": bootstrap})}
        )
    registry = config.ingest.schema_registry_dir
    if registry is not None and base_dir is not None and not registry.is_absolute():
        config = config.model_copy(
            update={
                "ingest": config.ingest.model_copy(
                    update={"schema_registry_dir": (base_dir / registry).resolve()}
                )
            }
        )
    return config


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None) -> AppConfig:
    """Read and validate a YAML configuration file.

    ``KAFKA_BOOTSTRAP_SERVERS`` (in ``env``, default ``os.environ``), when set and not
    blank, replaces ``kafka.bootstrap_servers``: the same file then works against the local
    broker and a real cluster. Relative ``schema_registry_dir`` is resolved against the
    file's directory, so the result does not depend on the working directory.
    """
    file = Path(path)
    try:
        text = file.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # Only the position and the problem: PyYAML's own message quotes the line, which
        # may be the one holding the password.
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(f"{file}: not valid YAML: {where}{problem}") from None
    return parse_config(data, source=str(file), base_dir=file.parent, env=env)
