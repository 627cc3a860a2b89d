"""Customer.io records from a JSON-lines file, through the same decoders as Kafka.

Used by ``streamsync replay`` and ``explain``: a file may mix Data Pipelines records and
reporting-webhook records in arrival order, so each line is sniffed (a webhook has
``event_id`` and ``metric``). The position of a record is reported as topic = file name,
partition 0, offset = line number, so errors point at the line.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from streamsync.config import DEFAULT_MAX_RECORD_BYTES
from streamsync.ingest.decoder import check_size, parse_json_object
from streamsync.ingest.errors import DecodeError
from streamsync.ingest.event import Event, SourcePosition
from streamsync.ingest.pipelines import pipelines_event
from streamsync.ingest.webhooks import webhook_event


@dataclass(frozen=True, slots=True)
class LineError:
    """A line that could not be decoded: where it is and why."""

    line: int
    error: DecodeError

    def __str__(self) -> str:
        return f"line {self.line}: {self.error.reason.value}: {self.error.detail}"


@dataclass(frozen=True, slots=True)
class Skipped:
    """A valid line without a customer key (anonymous traffic): counted, not an error."""

    line: int


def is_webhook_record(record: dict[str, Any]) -> bool:
    """Whether a decoded JSON record is a reporting webhook rather than a Data Pipelines
    record: webhooks carry ``event_id`` and ``metric``."""
    return "event_id" in record and "metric" in record


def decode_line(
    raw: bytes, source: SourcePosition, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
) -> Event | None:
    """One JSON line -> ``Event``, ``None`` (no customer key) or ``DecodeError``, with the
    same size limit and checks as a JSON topic."""
    check_size(raw.rstrip(b"\r\n"), max_record_bytes)
    record = parse_json_object(raw)
    if is_webhook_record(record):
        return webhook_event(record, None, source)
    return pipelines_event(record, None, source)


def read_events(lines: Iterable[bytes], name: str = "-") -> Iterator[Event | LineError | Skipped]:
    """Decode every non-blank line (an open file, or any iterable of lines) in order."""
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            event = decode_line(raw, SourcePosition(name, 0, number))
        except DecodeError as exc:
            yield LineError(number, exc)
            continue
        yield Skipped(number) if event is None else event


def open_events(path: str | Path) -> IO[bytes]:
    """``-`` is standard input."""
    if str(path) == "-":
        return sys.stdin.buffer
    return Path(path).open("rb")
