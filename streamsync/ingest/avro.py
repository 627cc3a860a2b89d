"""Avro twins of the Customer.io records: schemas, a file-backed schema registry, codecs.

Two framings:

* ``plain`` - the value is the schemaless Avro body; the schema is fixed per topic (the
  in-repo ``schemas/customerio_*_event.avsc``).
* ``confluent`` - Confluent wire format: magic byte ``0``, a 4-byte big-endian schema id,
  then the body. The writer schema is looked up by id through a :class:`SchemaRegistry`;
  when it differs from ours, fastavro resolves it to ours (schema evolution).

Decoding produces the same dict shape as the JSON record (JSON-encoded string fields are
parsed back into objects), and the shared validators in :mod:`~streamsync.ingest.pipelines`
and :mod:`~streamsync.ingest.webhooks` build the ``Event``: one validation path for both
encodings, so twins cannot decode differently.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal, Protocol

import fastavro
import orjson
import yaml
from fastavro.read import SchemaResolutionError
from fastavro.schema import to_parsing_canonical_form

from streamsync.ingest.bounds import json_error
from streamsync.ingest.errors import DecodeError, DecodeReason
from streamsync.ingest.pipelines import type_name
from streamsync.resources import project_path

SCHEMA_DIR = project_path("schemas")
PIPELINES_SCHEMA_PATH = SCHEMA_DIR / "customerio_pipelines_event.avsc"
WEBHOOK_SCHEMA_PATH = SCHEMA_DIR / "customerio_webhook_event.avsc"
#: Name of the optional id -> schema file mapping inside a registry directory.
REGISTRY_MAPPING_FILE = "registry.yaml"

RecordKind = Literal["pipelines", "webhook"]
Framing = Literal["plain", "confluent"]

_MAGIC = 0
_HEADER_BYTES = 5
_PIPELINES_JSON_FIELDS = ("properties", "traits", "context")


class UnknownSchemaError(LookupError):
    """The registry has no schema with this id (or not yet: see ``unknown_id_retry``)."""


class NotLookedUpError(UnknownSchemaError):
    """The registry was not asked for this id: the bound on lookups a second was spent.
    Its records are bad records like those of an unknown id, but the dead letter says
    the registry was never asked, so nobody hunts for a schema that may well exist."""


class BadSchemaError(ValueError):
    """The registry has the id, but its schema cannot be read or parsed."""


class SchemaRegistry(Protocol):
    """Looks up a parsed Avro schema by Confluent schema id.

    A Protocol with two implementations: :class:`FileSchemaRegistry`, which needs no
    network service, and ``registry_client.ConfluentSchemaRegistry`` over a real registry.
    """

    def schema(self, schema_id: int) -> Any:
        """The parsed (``fastavro.parse_schema``) schema; raises :class:`UnknownSchemaError`
        or :class:`BadSchemaError`."""
        ...


def _load_schema(path: Path) -> Any:
    try:
        return fastavro.parse_schema(orjson.loads(path.read_bytes()))
    except (OSError, orjson.JSONDecodeError, fastavro.schema.SchemaParseException) as exc:
        raise BadSchemaError(f"{path}: {exc}") from exc


@cache
def pipelines_schema() -> Any:
    """The parsed in-repo Data Pipelines schema."""
    return _load_schema(PIPELINES_SCHEMA_PATH)


@cache
def webhook_schema() -> Any:
    """The parsed in-repo reporting webhook schema."""
    return _load_schema(WEBHOOK_SCHEMA_PATH)


def schema_for(kind: RecordKind) -> Any:
    return pipelines_schema() if kind == "pipelines" else webhook_schema()


class FileSchemaRegistry:
    """Schemas by id from files: ``<id>.avsc`` in a directory and/or an id -> path mapping
    (``registry.yaml`` in that directory, or a JSON/YAML file given directly).

    Schemas are parsed on first use and cached, failures included, so a bad id costs one
    file read rather than one per record.
    """

    def __init__(self, paths: Mapping[int, Path]) -> None:
        self._paths = dict(paths)
        self._parsed: dict[int, Any] = {}
        self._failed: dict[int, BadSchemaError] = {}

    @classmethod
    def from_path(cls, path: str | Path) -> FileSchemaRegistry:
        """A registry from a directory (``<id>.avsc`` files plus optional ``registry.yaml``)
        or from a JSON/YAML mapping file; mapping paths are relative to the mapping file."""
        root = Path(path)
        paths: dict[int, Path] = {}
        mapping_file: Path | None = root
        if root.is_dir():
            for candidate in root.glob("*.avsc"):
                if candidate.stem.isdecimal():
                    paths[int(candidate.stem)] = candidate
            mapping_file = root / REGISTRY_MAPPING_FILE
            if not mapping_file.exists():
                mapping_file = None
        elif not root.exists():
            raise FileNotFoundError(f"schema registry {root} does not exist")
        if mapping_file is not None:
            mapping = yaml.safe_load(mapping_file.read_text("utf-8")) or {}
            if not isinstance(mapping, dict):
                raise ValueError(f"{mapping_file}: expected a mapping of schema id -> file")
            for key, value in mapping.items():
                paths[int(key)] = (mapping_file.parent / str(value)).resolve()
        return cls(paths)

    @property
    def ids(self) -> frozenset[int]:
        return frozenset(self._paths)

    def schema(self, schema_id: int) -> Any:
        parsed = self._parsed.get(schema_id)
        if parsed is not None:
            return parsed
        failed = self._failed.get(schema_id)
        if failed is not None:
            raise failed
        path = self._paths.get(schema_id)
        if path is None:
            raise UnknownSchemaError(f"schema id {schema_id} is not registered")
        try:
            parsed = _load_schema(path)
        except BadSchemaError as exc:
            self._failed[schema_id] = exc
            raise
        self._parsed[schema_id] = parsed
        return parsed


def _read_body(data: bytes, offset: int, writer: Any, reader: Any) -> dict[str, Any]:
    buffer = io.BytesIO(data)
    buffer.seek(offset)
    try:
        record = fastavro.schemaless_reader(buffer, writer, reader)
    except EOFError:
        raise DecodeError(
            DecodeReason.TRUNCATED_AVRO, "the Avro body ends before the schema says it should"
        ) from None
    except SchemaResolutionError:
        raise DecodeError(
            DecodeReason.BAD_SCHEMA, "the writer schema cannot be resolved to the reader schema"
        ) from None
    except (UnicodeDecodeError, IndexError, ValueError, TypeError, OverflowError) as exc:
        raise DecodeError(
            DecodeReason.MALFORMED_AVRO,
            f"the Avro body does not match its schema ({type(exc).__name__})",
        ) from None
    if buffer.tell() != len(data):
        raise DecodeError(
            DecodeReason.MALFORMED_AVRO,
            f"{len(data) - buffer.tell()} trailing bytes after the Avro record",
        )
    if type(record) is not dict:  # pragma: no cover - our schemas are records
        raise DecodeError(DecodeReason.WRONG_TYPE, "the Avro value is not a record")
    return record


def _json_field(record: dict[str, Any], field: str, label: str) -> None:
    """Replace a JSON-encoded string field by its parsed value, in place."""
    text = record.get(field)
    if text is None:
        return
    try:
        record[field] = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise json_error(exc, f"{label} (an Avro JSON string field)") from None


def pipelines_from_avro(record: dict[str, Any]) -> dict[str, Any]:
    """The JSON shape of a decoded Avro Data Pipelines record (in place)."""
    for field in _PIPELINES_JSON_FIELDS:
        _json_field(record, field, field)
    return record


def webhook_from_avro(record: dict[str, Any]) -> dict[str, Any]:
    """The JSON shape of a decoded Avro webhook: customer_id and identifiers back in data."""
    _json_field(record, "data", "data")
    data = record.pop("data", None)
    if data is None:
        data = {}
    elif type(data) is not dict:
        raise DecodeError(
            DecodeReason.WRONG_TYPE, f"data must be a JSON object, got {type_name(data)}"
        )
    customer_id = record.pop("customer_id", None)
    if customer_id is not None:
        data["customer_id"] = customer_id
    identifiers = record.pop("identifiers", None)
    if identifiers is not None:
        data["identifiers"] = {k: v for k, v in identifiers.items() if v is not None}
    record["data"] = data
    return record


class AvroRecordDecoder:
    """Bytes -> JSON-shaped dict for one topic's Avro records (``kind`` and ``framing``).

    For the Confluent framing, the (writer, reader) pair of each schema id is worked out
    once: when the writer schema is ours (same canonical form) no resolution is needed and
    fastavro reads with the writer schema alone, which is the fast path.
    """

    def __init__(
        self, kind: RecordKind, framing: Framing, registry: SchemaRegistry | None = None
    ) -> None:
        if framing == "confluent" and registry is None:
            raise ValueError("the confluent framing needs a schema registry")
        self.kind: RecordKind = kind
        self.framing: Framing = framing
        self._registry = registry
        self._ours = schema_for(kind)
        self._ours_canonical = to_parsing_canonical_form(self._ours)
        self._by_id: dict[int, tuple[Any, Any]] = {}
        self._to_json = pipelines_from_avro if kind == "pipelines" else webhook_from_avro

    def _schemas(self, schema_id: int) -> tuple[Any, Any]:
        pair = self._by_id.get(schema_id)
        if pair is not None:
            return pair
        assert self._registry is not None
        try:
            writer = self._registry.schema(schema_id)
        except NotLookedUpError:
            raise DecodeError(
                DecodeReason.UNKNOWN_SCHEMA_ID,
                f"schema id {schema_id} was not looked up: the registry lookups a second "
                "(ingest.schema_registry.max_lookups_per_s) were spent",
            ) from None
        except UnknownSchemaError:
            raise DecodeError(
                DecodeReason.UNKNOWN_SCHEMA_ID, f"schema id {schema_id} is not in the registry"
            ) from None
        except BadSchemaError:
            raise DecodeError(
                DecodeReason.BAD_SCHEMA, f"schema id {schema_id} cannot be parsed"
            ) from None
        same = to_parsing_canonical_form(writer) == self._ours_canonical
        pair = (writer, None if same else self._ours)
        self._by_id[schema_id] = pair
        return pair

    def decode(self, data: bytes) -> dict[str, Any]:
        if self.framing == "plain":
            return self._to_json(_read_body(data, 0, self._ours, None))
        if data[0] != _MAGIC:
            raise DecodeError(
                DecodeReason.BAD_MAGIC_BYTE,
                f"Confluent-framed value starts with byte {data[0]}, not 0",
            )
        if len(data) < _HEADER_BYTES:
            raise DecodeError(
                DecodeReason.TRUNCATED_AVRO, "shorter than the 5-byte Confluent header"
            )
        writer, reader = self._schemas(int.from_bytes(data[1:_HEADER_BYTES], "big"))
        return self._to_json(_read_body(data, _HEADER_BYTES, writer, reader))


# -- encoders: used by tests, the benchmark and the demo producer ---------------------


def pipelines_to_avro(record: Mapping[str, Any]) -> dict[str, Any]:
    """The Avro datum of a JSON Data Pipelines record (objects JSON-encoded)."""
    datum: dict[str, Any] = {
        field: record.get(field)
        for field in ("type", "messageId", "timestamp", "userId", "anonymousId", "event", "name")
    }
    for field in _PIPELINES_JSON_FIELDS:
        value = record.get(field)
        datum[field] = None if value is None else orjson.dumps(value).decode()
    return datum


def webhook_to_avro(record: Mapping[str, Any]) -> dict[str, Any]:
    """The Avro datum of a JSON reporting webhook."""
    data = dict(record.get("data") or {})
    customer_id = data.pop("customer_id", None)
    identifiers = data.pop("identifiers", None)
    return {
        "event_id": record.get("event_id"),
        "object_type": record.get("object_type"),
        "metric": record.get("metric"),
        "timestamp": record.get("timestamp"),
        "customer_id": customer_id,
        "identifiers": None
        if identifiers is None
        else {k: identifiers.get(k) for k in ("id", "email", "cio_id")},
        "data": orjson.dumps(data).decode() if data else None,
    }


def encode_avro(kind: RecordKind, record: Mapping[str, Any]) -> bytes:
    """A JSON-shaped record as a plain (schemaless) Avro body of our schema."""
    datum = pipelines_to_avro(record) if kind == "pipelines" else webhook_to_avro(record)
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema_for(kind), datum)
    return buffer.getvalue()


def confluent_frame(schema_id: int, body: bytes) -> bytes:
    """Prefix an Avro body with the Confluent header (magic 0, big-endian schema id)."""
    return bytes([_MAGIC]) + schema_id.to_bytes(4, "big") + body
