"""Writer schemas from a Confluent-compatible Schema Registry, for Confluent-framed Avro.

Teams that produce Avro run a registry (Confluent's, Apicurio's ``/apis/ccompat/v7``,
Karapace); :class:`FileSchemaRegistry` with hand-chosen ids serves offline use. This is
the same :class:`~streamsync.ingest.avro.SchemaRegistry` over
``confluent_kafka.schema_registry``, the client made for it (HTTP basic auth, TLS,
its own cache): each id is asked for once, and what it answered - a schema, or that the
id does not exist or is not Avro - is kept for the life of the process, so a record
costs no round trip. A registry that does not answer is not a bad record: it stops the
service (:class:`RegistryUnavailable`) instead of dead-lettering every record meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import fastavro
import orjson
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from fastavro.schema import SchemaParseException

from streamsync.errors import NeedsOperator, Unavailable
from streamsync.ingest.avro import (
    BadSchemaError,
    FileSchemaRegistry,
    SchemaRegistry,
    UnknownSchemaError,
)
from streamsync.ingest.config import IngestConfig, SchemaRegistryConfig

#: The registry's error code for a schema id it does not hold.
_SCHEMA_NOT_FOUND = 40403


class RegistryUnavailable(Unavailable):
    """The schema registry did not answer (or answered with a server error): exit 1."""


class RegistryRefused(NeedsOperator):
    """The schema registry refused the credentials (401/403): exit 1, a person acts."""


class ConfluentSchemaRegistry:
    """Parsed writer schemas by id from a registry at ``client`` (see the module)."""

    def __init__(self, client: SchemaRegistryClient, url: str) -> None:
        self._client = client
        self.url = url
        self._parsed: dict[int, Any] = {}
        self._failed: dict[int, Exception] = {}

    @classmethod
    def from_config(
        cls, config: SchemaRegistryConfig, env: Mapping[str, str] | None = None
    ) -> ConfluentSchemaRegistry:
        settings: dict[str, Any] = {"url": config.url}
        if config.username is not None and config.password_from is not None:
            password = config.password_from.read(env).get_secret_value()
            settings["basic.auth.user.info"] = f"{config.username}:{password}"
        return cls(SchemaRegistryClient(settings), config.url)

    def schema(self, schema_id: int) -> Any:
        parsed = self._parsed.get(schema_id)
        if parsed is not None:
            return parsed
        failed = self._failed.get(schema_id)
        if failed is not None:
            raise failed
        try:
            found = self._client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.error_code == _SCHEMA_NOT_FOUND or exc.http_status_code == 404:
                unknown = UnknownSchemaError(f"schema id {schema_id} is not in {self.url}")
                self._failed[schema_id] = unknown
                raise unknown from None
            if exc.http_status_code in (401, 403):
                raise RegistryRefused(
                    f"schema registry {self.url} refused the credentials "
                    f"(HTTP {exc.http_status_code}); check ingest.schema_registry"
                ) from None
            raise RegistryUnavailable(
                f"schema registry {self.url} answered HTTP {exc.http_status_code} for "
                f"schema id {schema_id}: {exc.error_message}"
            ) from None
        except Exception as exc:  # the HTTP client's connection errors
            raise RegistryUnavailable(
                f"schema registry {self.url} did not answer for schema id {schema_id} "
                f"({type(exc).__name__}: {exc})"
            ) from None
        if (found.schema_type or "AVRO") != "AVRO":
            bad = BadSchemaError(f"schema id {schema_id} is {found.schema_type}, not Avro")
            self._failed[schema_id] = bad
            raise bad
        try:
            parsed = fastavro.parse_schema(orjson.loads(found.schema_str or ""))
        except (orjson.JSONDecodeError, SchemaParseException, TypeError, ValueError) as exc:
            bad = BadSchemaError(f"schema id {schema_id}: {exc}")
            self._failed[schema_id] = bad
            raise bad from None
        self._parsed[schema_id] = parsed
        return parsed


def register_subject(
    config: SchemaRegistryConfig,
    subject: str,
    schema_text: str,
    env: Mapping[str, str] | None = None,
) -> int:
    """The id of the Avro ``schema_text`` under ``subject``, registered if it is not
    yet (the registry answers with the existing id for a schema it holds)."""
    registry = ConfluentSchemaRegistry.from_config(config, env)
    try:
        return int(registry._client.register_schema(subject, Schema(schema_text, "AVRO")))
    except SchemaRegistryError as exc:
        if exc.http_status_code in (401, 403):
            raise RegistryRefused(
                f"schema registry {config.url} refused the credentials "
                f"(HTTP {exc.http_status_code}); check ingest.schema_registry"
            ) from None
        raise RegistryUnavailable(
            f"schema registry {config.url} refused subject {subject} "
            f"(HTTP {exc.http_status_code}): {exc.error_message}"
        ) from None
    except Exception as exc:  # the HTTP client's connection errors
        raise RegistryUnavailable(
            f"schema registry {config.url} did not answer registering subject {subject} "
            f"({type(exc).__name__}: {exc})"
        ) from None


def configured_registry(
    ingest: IngestConfig, env: Mapping[str, str] | None = None
) -> SchemaRegistry | None:
    """The registry ``ingest`` names: a Schema Registry (``schema_registry``), a folder of
    ``.avsc`` files (``schema_registry_dir``), or none."""
    if ingest.schema_registry is not None:
        return ConfluentSchemaRegistry.from_config(ingest.schema_registry, env)
    if ingest.schema_registry_dir is not None:
        return FileSchemaRegistry.from_path(ingest.schema_registry_dir)
    return None
