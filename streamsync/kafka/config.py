"""The ``kafka:`` section of the configuration file (:class:`KafkaConfig`: how to reach
the cluster), and the librdkafka configuration builders, in one place so every client
agrees on the basics.

Each builder returns a plain ``dict`` for confluent-kafka; ``extra`` entries win, so a
caller (or a user's own settings file) can override anything.

Secrets (the SASL password) are ``SecretStr``, or named by a
:class:`~streamsync.credentials.Credentials` (``sasl_password_from``) and read only when a
client is built: ``repr``/``str`` of the model, and :meth:`KafkaConfig.redacted`, show
``**********`` or no more than the variable or file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from streamsync.credentials import Credentials, CredentialsError

#: Environment variable naming the cluster to use. Production configuration reads it (it
#: overrides ``kafka.bootstrap_servers``), and the development broker skips starting when it
#: is set; it lives here so production code never imports the development broker.
BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"


#: librdkafka settings the exactly-once cycle and manual offset commits depend on:
#: ``kafka.extra`` may not override them.
PROTECTED_SETTINGS = frozenset(
    {
        "enable.idempotence",
        "transactional.id",
        "isolation.level",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "group.id",
        "acks",
        "request.required.acks",
        "max.in.flight.requests.per.connection",
        "max.in.flight",
        "transaction.timeout.ms",
        "session.timeout.ms",
    }
)


def admin_config(bootstrap: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An AdminClient configuration for ``bootstrap``."""
    config: dict[str, Any] = {"bootstrap.servers": bootstrap}
    config.update(extra or {})
    return config


def producer_config(
    bootstrap: str,
    *,
    transactional_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An idempotent producer; transactional when ``transactional_id`` is given.

    Idempotence keeps per-partition order and removes duplicates on retry, which the
    exactly-once delta topic needs; it costs nothing measurable on one broker.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "linger.ms": 5,
        "compression.type": "lz4",
    }
    if transactional_id is not None:
        config["transactional.id"] = transactional_id
    config.update(extra or {})
    return config


def consumer_config(
    bootstrap: str,
    group_id: str,
    *,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A consumer that commits by hand and reads only committed transactional data.

    Offsets are committed by streamsync after the work for a record is durable (dead
    letters flushed, deltas produced), never on a timer, so a crash re-reads rather than
    loses records.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "enable.partition.eof": False,
    }
    config.update(extra or {})
    return config


_REDACTED = "**********"


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
        taken = sorted(set(extra) & PROTECTED_SETTINGS)
        if taken:
            raise ValueError(
                f"cannot set {', '.join(taken)}: exactly-once delivery and offset "
                "handling depend on streamsync's own values (transaction_timeout and "
                "session_timeout are evaluate settings)"
            )
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
