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
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from streamsync.kafka.broker import BOOTSTRAP_ENV
from streamsync.strict_yaml import YamlSyntaxError, YamlTextError, parse_yaml

TopicFormat = Literal["pipelines_json", "webhook_json", "pipelines_avro", "webhook_avro"]
DEFAULT_MAX_RECORD_BYTES = 1024 * 1024
DEFAULT_DEAD_LETTER_TOPIC = "streamsync.dead-letter"
_REDACTED = "**********"


#: A configuration file is a page of YAML; anything near this size is the wrong file.
MAX_CONFIG_BYTES = 1024 * 1024


class ConfigError(ValueError):
    """The configuration file is missing, not YAML, or not valid; the message is one line
    that says where (file, line or key) and never quotes a value."""


def check_librdkafka_settings(settings: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the first key librdkafka rejects (unknown, or a value
    it cannot take), without the value: it may be a secret.

    confluent-kafka checks settings only when a client is built, which for ``ingest``
    would be after start-up; building a throw-away producer (no brokers, logging off)
    here checks them at load, in about a millisecond.
    """
    if not settings:
        return
    from confluent_kafka import KafkaException, Producer

    def rejected(candidate: Mapping[str, Any]) -> str | None:
        try:
            Producer({**candidate, "log_level": 0})
        except KafkaException as exc:
            return str(exc.args[0].str() if exc.args else exc)
        except (TypeError, ValueError) as exc:
            return str(exc)
        return None

    if rejected(settings) is None:
        return
    for key, value in settings.items():
        problem = rejected({key: value})
        if problem is None:
            continue
        if "No such configuration property" in problem:
            raise ValueError(f"{key!r} is not a librdkafka setting")
        raise ValueError(f"librdkafka rejects the value of {key!r}")
    keys = ", ".join(map(repr, settings))
    raise ValueError(f"librdkafka rejects these settings together: {keys}")


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

    @field_validator("extra")
    @classmethod
    def _librdkafka_accepts(
        cls, extra: dict[str, str | int | float | bool]
    ) -> dict[str, str | int | float | bool]:
        check_librdkafka_settings(extra)
        return extra

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


def _format_errors(error: ValidationError) -> str:
    # Never include ``input``: it may be a password or a customer's data.
    parts = []
    for item in error.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "(root)"
        message = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


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
        raise ConfigError(f"{source}: invalid configuration: {_format_errors(exc)}") from None
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


def check_schema_registry(path: Path, what: str) -> None:
    """:class:`ConfigError` (prefixed with ``what``) when the file-backed schema registry
    at ``path`` is missing or its mapping file cannot be read: found at start-up, not
    when the first Avro record arrives."""
    from streamsync.ingest.avro import FileSchemaRegistry

    if not path.exists():
        raise ConfigError(f"{what}: {path} does not exist")
    try:
        FileSchemaRegistry.from_path(path)
    except OSError as exc:
        raise ConfigError(f"{what}: {exc.filename or path}: {exc.strerror}") from None
    except yaml.YAMLError:
        # Not PyYAML's message: it quotes lines.
        raise ConfigError(f"{what}: {path}: its registry mapping is not valid YAML") from None
    except (ValueError, TypeError) as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(f"{what}: {path}: the registry mapping is invalid: {detail}") from None


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None) -> AppConfig:
    """Read and validate a YAML configuration file.

    ``KAFKA_BOOTSTRAP_SERVERS`` (in ``env``, default ``os.environ``), when set and not
    blank, replaces ``kafka.bootstrap_servers``: the same file then works against the local
    broker and a real cluster. Relative ``schema_registry_dir`` is resolved against the
    file's directory, so the result does not depend on the working directory.
    """
    file = Path(path)
    if file.is_dir():
        raise ConfigError(f"{file}: is a directory, not a configuration file")
    if file.exists() and not (file.is_file() or file.is_fifo()):
        raise ConfigError(f"{file}: not a regular file")
    try:
        with file.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read ({exc.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{file}: larger than {MAX_CONFIG_BYTES // 1024 // 1024} MiB")
    try:
        document = parse_yaml(raw)
    except YamlTextError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    except YamlSyntaxError as exc:
        # Only the position and the problem: PyYAML's own message quotes the line, which
        # may be the one holding the password.
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    if document.duplicate_keys:
        where = "; ".join(f"line {d.line}: {d}" for d in document.duplicate_keys)
        raise ConfigError(f"{file}: {where}")
    config = parse_config(document.data, source=str(file), base_dir=file.parent, env=env)
    registry = config.ingest.schema_registry_dir
    if registry is not None:
        check_schema_registry(registry, f"{file}: ingest.schema_registry_dir")
    return config
