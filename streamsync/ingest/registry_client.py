"""Writer schemas from a Confluent-compatible Schema Registry, for Confluent-framed Avro.

Teams that produce Avro run a registry (Confluent's, Apicurio's ``/apis/ccompat/v7``,
Karapace); :class:`FileSchemaRegistry` with hand-chosen ids serves offline use. This is
the same :class:`~streamsync.ingest.avro.SchemaRegistry` over
``confluent_kafka.schema_registry``, the client made for it (HTTP basic auth, TLS,
its own cache).

What a lookup answered is kept, so a record costs no round trip:

* a schema, or that the id is not Avro or cannot be parsed, for the life of the process
  (what an id names never changes);
* that the registry does not hold the id, for ``unknown_id_retry`` only: a registry
  replica that lags behind a producer's registration answers "not found" for a while,
  and the id's records must decode once it has caught up, without a restart.

Lookups of ids not yet known are bounded (``max_lookups_per_s``, a token bucket with a
burst of one second's worth): beyond it an id is answered unknown without asking and
asked for at a later record, so a flood of distinct bad ids cannot load the registry;
the bound never delays a record. Remembered unknown ids expire, so what is remembered is
bounded by the same two settings.

A writer schema may name types of other subjects' schemas (Confluent ``references``:
name, subject, version); those are fetched (each subject version once for the process,
their own references too) and given to fastavro as named schemas.

A registry that does not answer is not a bad record: it stops the service
(:class:`RegistryUnavailable`) instead of dead-lettering every record meanwhile.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
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
    NotLookedUpError,
    SchemaRegistry,
    UnknownSchemaError,
)
from streamsync.ingest.config import (
    DEFAULT_MAX_LOOKUPS_PER_S,
    DEFAULT_UNKNOWN_ID_RETRY_MS,
    IngestConfig,
    SchemaRegistryConfig,
)

#: More references than this behind one writer schema is not a schema a producer wrote
#: (and resolving them recurses once per level, well inside Python's stack).
MAX_REFERENCES = 200


class RegistryUnavailable(Unavailable):
    """The schema registry did not answer (or answered with a server error): exit 1."""


class RegistryRefused(NeedsOperator):
    """The schema registry refused the credentials (401/403): exit 1, a person acts."""


#: The registry's error codes for a subject, a version or a schema id it does not hold.
_NOT_FOUND = (40401, 40402, 40403)


def _failure(url: str, what: str, exc: Exception, *, missing: str | None = None) -> Exception:
    """What a failed request (``what``: "for schema id 7", "registering subject s")
    means, the one mapping of the client's errors: not found (when the caller gives the
    ``missing`` message) :class:`UnknownSchemaError`, 401/403 :class:`RegistryRefused`,
    any other answer or none :class:`RegistryUnavailable`."""
    if isinstance(exc, SchemaRegistryError):
        status = exc.http_status_code
        if missing is not None and (status == 404 or exc.error_code in _NOT_FOUND):
            return UnknownSchemaError(missing)
        if status in (401, 403):
            return RegistryRefused(
                f"schema registry {url} refused the credentials (HTTP {status}); "
                "check ingest.schema_registry"
            )
        return RegistryUnavailable(
            f"schema registry {url} answered HTTP {status} {what}: {exc.error_message}"
        )
    return RegistryUnavailable(  # the HTTP client's connection errors
        f"schema registry {url} did not answer {what} ({type(exc).__name__}: {exc})"
    )


class LookupBudget:
    """A token bucket: ``per_second`` lookups a second, a burst of as many. Taking never
    waits: a record is never delayed by the bound, only answered without asking."""

    def __init__(self, per_second: float, clock: Callable[[], float]) -> None:
        self.per_second = float(per_second)
        self._clock = clock
        self._tokens = self.per_second
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.per_second, self._tokens + (now - self._at) * self.per_second)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class ConfluentSchemaRegistry:
    """Parsed writer schemas by id from a registry at ``client`` (see the module).

    ``clock`` (seconds, monotonic) is injectable so the expiry of unknown ids and the
    lookup budget are tested without sleeping.
    """

    def __init__(
        self,
        client: SchemaRegistryClient,
        url: str,
        *,
        unknown_id_retry_s: float = DEFAULT_UNKNOWN_ID_RETRY_MS / 1000,
        max_lookups_per_s: float = DEFAULT_MAX_LOOKUPS_PER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.url = url
        self._retry_s = unknown_id_retry_s
        self._clock = clock
        self._budget = LookupBudget(max_lookups_per_s, clock)
        self._parsed: dict[int, Any] = {}
        self._bad: dict[int, BadSchemaError] = {}
        #: id -> (when asked, the answer); oldest first, so expired ones leave from the front.
        self._unknown: OrderedDict[int, tuple[float, UnknownSchemaError]] = OrderedDict()
        #: (subject, version) -> that version's schema, for references.
        self._versions: dict[tuple[str, int], Schema] = {}

    @classmethod
    def from_config(
        cls,
        config: SchemaRegistryConfig,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> ConfluentSchemaRegistry:
        settings: dict[str, Any] = {"url": config.url}
        if config.username is not None and config.password_from is not None:
            password = config.password_from.read(env).get_secret_value()
            settings["basic.auth.user.info"] = f"{config.username}:{password}"
        return cls(
            SchemaRegistryClient(settings),
            config.url,
            unknown_id_retry_s=config.unknown_id_retry_ms / 1000,
            max_lookups_per_s=config.max_lookups_per_s,
            clock=clock,
        )

    def schema(self, schema_id: int) -> Any:
        parsed = self._parsed.get(schema_id)
        if parsed is not None:
            return parsed
        bad = self._bad.get(schema_id)
        if bad is not None:
            raise bad
        now = self._clock()
        self._forget_expired(now)
        remembered = self._unknown.get(schema_id)
        if remembered is not None:
            raise remembered[1]
        if not self._budget.take():
            raise NotLookedUpError(
                f"schema id {schema_id} was not looked up: more than "
                f"{self._budget.per_second:g} lookups a second were needed"
            )
        try:
            parsed = self._lookup(schema_id)
        except UnknownSchemaError as exc:
            self._unknown[schema_id] = (now, exc)
            raise
        except BadSchemaError as exc:
            self._bad[schema_id] = exc
            raise
        self._parsed[schema_id] = parsed
        return parsed

    def _forget_expired(self, now: float) -> None:
        """Drop the unknown ids asked for at least ``unknown_id_retry`` ago (all entries
        share the interval, so they expire in the order they were asked)."""
        unknown = self._unknown
        while unknown:
            asked, _ = next(iter(unknown.values()))
            if now - asked < self._retry_s:
                return
            unknown.popitem(last=False)

    def _lookup(self, schema_id: int) -> Any:
        """The parsed schema of ``schema_id`` with its references, from the registry."""
        what = f"schema id {schema_id}"
        try:
            found = self._client.get_schema(schema_id)
        except Exception as exc:
            missing = f"{what} is not in {self.url}"
            raise _failure(self.url, f"for {what}", exc, missing=missing) from None
        if (found.schema_type or "AVRO") != "AVRO":
            raise BadSchemaError(f"{what} is {found.schema_type}, not Avro")
        named: dict[str, Any] = {}
        for version in self._referenced(schema_id, found):
            self._parse(what, version.schema_str, named)
        return self._parse(what, found.schema_str, named)

    def _referenced(self, schema_id: int, found: Schema) -> list[Schema]:
        """The schemas ``found`` references, directly or through others, each once and
        after those it references itself (the order fastavro needs to know their names)."""
        order: list[Schema] = []
        done: set[tuple[str, int]] = set()
        on_path: set[tuple[str, int]] = set()

        def visit(schema: Schema) -> None:
            for reference in schema.references or ():
                version_number = reference.version
                if reference.subject is None or type(version_number) is not int:
                    raise BadSchemaError(
                        f"schema id {schema_id} has a reference without a subject or a "
                        "version number"
                    )
                key = (reference.subject, version_number)
                if key in done:
                    continue
                if key in on_path:
                    raise BadSchemaError(
                        f"schema id {schema_id}: references of subject {key[0]} "
                        f"version {key[1]} form a cycle"
                    )
                if len(done) + len(on_path) >= MAX_REFERENCES:
                    raise BadSchemaError(
                        f"schema id {schema_id} has more than {MAX_REFERENCES} references"
                    )
                on_path.add(key)
                version = self._version(schema_id, *key)
                if (version.schema_type or "AVRO") != "AVRO":
                    raise BadSchemaError(
                        f"schema id {schema_id} references subject {key[0]} version "
                        f"{key[1]}, which is {version.schema_type}, not Avro"
                    )
                visit(version)
                on_path.discard(key)
                done.add(key)
                order.append(version)

        visit(found)
        return order

    def _version(self, schema_id: int, subject: str, version: int) -> Schema:
        """``subject``'s ``version``, asked for once: a registered version never changes.
        One the registry does not hold makes ``schema_id`` unknown for now (a lagging
        replica may not have it yet either)."""
        key = (subject, version)
        schema = self._versions.get(key)
        if schema is not None:
            return schema
        what = f"subject {subject} version {version}"
        try:
            schema = self._client.get_version(subject, version).schema
        except Exception as exc:
            missing = f"schema id {schema_id} references {what}, which is not in {self.url}"
            raise _failure(self.url, f"for {what}", exc, missing=missing) from None
        self._versions[key] = schema
        return schema

    @staticmethod
    def _parse(what: str, text: str | None, named: dict[str, Any]) -> Any:
        """``text`` parsed by fastavro, knowing (and adding to) the ``named`` types."""
        try:
            return fastavro.parse_schema(orjson.loads(text or ""), named_schemas=named)
        except (orjson.JSONDecodeError, SchemaParseException, TypeError, ValueError) as exc:
            raise BadSchemaError(f"{what}: {exc}") from None


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
    except Exception as exc:
        raise _failure(config.url, f"registering subject {subject}", exc) from None


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
