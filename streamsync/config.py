"""streamsync's configuration file: one YAML document, validated once at start-up.

Each package owns its section's models, beside the code that reads them:

=================  ====================================================
``kafka:``         :class:`~streamsync.kafka.config.KafkaConfig`
``ingest:``        :class:`~streamsync.ingest.config.IngestConfig`
``deltas:``        :class:`~streamsync.deltas.config.DeltasConfig`
``evaluate:``      :class:`~streamsync.runtime.config.EvaluateConfig`
``identity:``      :class:`~streamsync.identity.config.IdentityConfig`
``destinations:``  :mod:`streamsync.destinations.kinds` (one model per ``kind``)
``observability:`` :class:`~streamsync.observability.config.ObservabilityConfig`
``console:``       :class:`~streamsync.console.config.ConsoleConfig`
=================  ====================================================

This module only assembles them (:class:`AppConfig`) and loads the file: size and YAML
checks, ``KAFKA_BOOTSTRAP_SERVERS``, paths relative to the file, credential files and the
schema registry. Validation errors are reformatted without the offending input values
(:class:`ConfigError`): an input may be a password or a customer's data.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from streamsync.console.config import ConsoleConfig
from streamsync.credentials import resolve_credential_files
from streamsync.deltas.config import DeltasConfig
from streamsync.destinations.config import DestinationConfig, resolve_paths
from streamsync.destinations.kinds import parse_destinations
from streamsync.identity.config import IdentityConfig
from streamsync.ingest.avro import FileSchemaRegistry
from streamsync.ingest.config import IngestConfig
from streamsync.kafka.config import BOOTSTRAP_ENV, KafkaConfig
from streamsync.observability.config import ObservabilityConfig
from streamsync.runtime.config import EvaluateConfig
from streamsync.strict_yaml import YamlSyntaxError, YamlTextError, parse_yaml

#: A configuration file is a page of YAML; anything near this size is the wrong file.
MAX_CONFIG_BYTES = 1024 * 1024


class ConfigError(ValueError):
    """The configuration file is missing, not YAML, or not valid; the message is one line
    that says where (file, line or key) and never quotes a value."""


class AppConfig(BaseModel):
    """The whole configuration file: one section per package."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    ingest: IngestConfig
    deltas: DeltasConfig = Field(default_factory=DeltasConfig)
    evaluate: EvaluateConfig | None = None
    identity: IdentityConfig = Field(default_factory=IdentityConfig)
    #: name -> settings; each entry's ``kind`` picks its model (streamsync/destinations/kinds.py).
    destinations: dict[str, DestinationConfig] = Field(default_factory=dict)

    _destinations = field_validator("destinations", mode="before")(
        classmethod(lambda cls, v: parse_destinations(v))
    )
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    #: Only ``streamsync console`` reads it; the other commands ignore it.
    console: ConsoleConfig | None = None

    @model_validator(mode="after")
    def _check_subject(self) -> AppConfig:
        if self.deltas.subject is not None and (
            self.deltas.format != "avro" or self.ingest.schema_registry is None
        ):
            raise ValueError("deltas.subject needs deltas.format avro and ingest.schema_registry")
        return self

    def observability_for(self, destination: str | None = None) -> ObservabilityConfig:
        """The ``observability:`` section as the process runs it: evaluate's and ingest's
        as written; a deliver process's (``destination``) on that destination's
        ``admin_port`` when it sets one, so processes sharing a file do not share a port."""
        port = None if destination is None else self.destinations[destination].admin_port
        if port is None:
            return self.observability
        admin = self.observability.admin.model_copy(update={"port": port})
        return self.observability.model_copy(update={"admin": admin})


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
    deltas_audiences = config.deltas.audiences
    if deltas_audiences is not None and base_dir is not None and not deltas_audiences.is_absolute():
        config = config.model_copy(
            update={
                "deltas": config.deltas.model_copy(
                    update={"audiences": (base_dir / deltas_audiences).resolve()}
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
    console = config.console
    audiences = None if console is None else console.audiences
    if console and base_dir is not None and audiences is not None and not audiences.is_absolute():
        resolved = (base_dir / audiences).resolve()
        config = config.model_copy(
            update={"console": console.model_copy(update={"audiences": resolved})}
        )
    if base_dir is not None:
        # Every {file: PATH} secret: kafka.sasl_password_from and the destinations'.
        config = resolve_credential_files(config, base_dir)
    return config


def check_schema_registry(path: Path, what: str) -> None:
    """:class:`ConfigError` (prefixed with ``what``) when the file-backed schema registry
    at ``path`` is missing or its mapping file cannot be read: found at start-up, not
    when the first Avro record arrives."""
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
