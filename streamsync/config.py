"""streamsync's configuration file: pydantic models at the edge, validated once at start-up.

Per-record code never sees these models: :class:`~streamsync.ingest.decoder.Decoder` reads
a :class:`TopicConfig` once and keeps plain attributes. Adding a topic is a configuration
change only: a new entry under ``ingest.topics``.

Secrets (the SASL password) are ``SecretStr``, or named by a
:class:`~streamsync.credentials.Credentials` (``sasl_password_from``) and read only when a
Kafka client is built: ``repr``/``str`` of any model, and :meth:`KafkaConfig.redacted`,
show ``**********`` or no more than the variable or file. Validation errors are
reformatted without the offending input values for the same reason (:class:`ConfigError`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from streamsync.credentials import Credentials, CredentialsError, resolve_credential_files
from streamsync.destinations.config import DestinationConfig, parse_destinations, resolve_paths
from streamsync.kafka.config import BOOTSTRAP_ENV
from streamsync.observability.config import ObservabilityConfig
from streamsync.strict_yaml import YamlSyntaxError, YamlTextError, parse_yaml

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


class KafkaConfig(_Model):
    """How to reach the cluster. ``extra`` is passed to librdkafka as is (and wins).

    The SASL password is either written in the file (``sasl_password``: the file is then a
    secret itself) or named (``sasl_password_from: {env: VARIABLE}`` or ``{file: PATH}``),
    read when the client settings are built so a missing one is reported at start-up by
    the command that needs Kafka, not by every command that loads the file.
    """

    bootstrap_servers: str = Field(default="localhost:9092", min_length=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_from: Credentials | None = Field(
        default=None,
        description="Where the SASL password is read: {env: VARIABLE} or {file: PATH} "
        "(relative to the configuration file); instead of sasl_password.",
    )
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
        if self.sasl_password is not None and self.sasl_password_from is not None:
            raise ValueError("set sasl_password or sasl_password_from, not both")
        if self.security_protocol.startswith("SASL_"):
            if self.sasl_mechanism is None:
                raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
            if self.sasl_username is None:
                raise ValueError("SASL needs sasl_username")
            if self.sasl_password is None and self.sasl_password_from is None:
                raise ValueError(
                    "SASL needs sasl_password, or sasl_password_from: {env: VARIABLE} or "
                    "{file: PATH}"
                )
        return self

    def _settings(self, password: str | None) -> dict[str, Any]:
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism is not None:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            config["sasl.username"] = self.sasl_username
        if password is not None:
            config["sasl.password"] = password
        if self.ssl_ca_location is not None:
            config["ssl.ca.location"] = self.ssl_ca_location
        config.update(self.extra)
        return config

    def client_config(self, env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The librdkafka settings shared by every client (contains the secret in clear:
        pass it to confluent-kafka, never log it - log :meth:`redacted` instead).

        A ``sasl_password_from`` source is read here (``env`` replaces ``os.environ``);
        :class:`~streamsync.credentials.CredentialsError` names it when it is unset,
        empty or unreadable. The password is registered with the log redactor either way.
        """
        password: str | None = None
        if self.sasl_password_from is not None:
            try:
                password = self.sasl_password_from.read(env).get_secret_value()
            except CredentialsError as exc:
                raise CredentialsError(f"kafka.sasl_password_from: {exc}") from None
        elif self.sasl_password is not None:
            password = self.sasl_password.get_secret_value()
        settings = self._settings(password)
        # Every secret-looking value, also one written under ``extra``, is masked in logs.
        secrets = [
            str(value)
            for key, value in settings.items()
            if ("password" in key or "secret" in key) and value
        ]
        if secrets:
            from streamsync.observability.logs import register_secrets

            register_secrets(secrets)
        return settings

    def redacted(self) -> dict[str, Any]:
        """:meth:`client_config` with every secret-looking value masked: safe to print.
        It reads no secret, so it works where the password is not available."""
        has_password = self.sasl_password is not None or self.sasl_password_from is not None
        return {
            key: _REDACTED if ("password" in key or "secret" in key) else value
            for key, value in self._settings(_REDACTED if has_password else None).items()
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


def _duration_ms(value: object) -> int:
    """Durations in the configuration are written as in audience files (``100ms``,
    ``5m``); a bare number is not accepted, so ``5`` cannot mean 5 ms by accident."""
    from streamsync.audiences.durations import parse_duration

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

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def changelog(self) -> str:
        return self.changelog_topic or f"{self.group_id}.changelog"


class AppConfig(_Model):
    """The whole configuration file."""

    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    ingest: IngestConfig
    deltas: DeltasConfig = Field(default_factory=DeltasConfig)
    evaluate: EvaluateConfig | None = None
    #: name -> settings; each entry's ``kind`` picks its model (streamsync/destinations/).
    destinations: dict[str, DestinationConfig] = Field(default_factory=dict)

    _destinations = field_validator("destinations", mode="before")(
        classmethod(lambda cls, v: parse_destinations(v))
    )
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)


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
    evaluate = config.evaluate
    if evaluate is not None and base_dir is not None:
        paths = {
            name: (base_dir / value).resolve()
            for name, value in (
                ("audiences", evaluate.audiences),
                ("state_dir", evaluate.state_dir),
            )
            if not value.is_absolute()
        }
        if paths:
            config = config.model_copy(update={"evaluate": evaluate.model_copy(update=paths)})
    if base_dir is not None and config.destinations:
        config = config.model_copy(
            update={
                "destinations": {
                    name: resolve_paths(dest, base_dir)
                    for name, dest in config.destinations.items()
                }
            }
        )
    if base_dir is not None:
        # Every {file: PATH} secret: kafka.sasl_password_from and the destinations'.
        config = resolve_credential_files(config, base_dir)
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
    broker and a real cluster. Relative paths (``schema_registry_dir``, audiences, state,
    credential files such as ``kafka.sasl_password_from.file``) are resolved against the
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
