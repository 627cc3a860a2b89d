"""Customer.io records from a JSON-lines file, through the same decoders as Kafka.

Used by ``streamsync replay`` and ``explain``: a file may mix Data Pipelines records and
reporting-webhook records in arrival order, so each line is sniffed (a webhook has
``event_id`` and ``metric``) and decoded by a :class:`~streamsync.ingest.decoder.Decoder`
built from the same :class:`~streamsync.ingest.config.TopicConfig` as the Kafka path
(:class:`InputPolicy`), so identity, ids, time and bounds are those of the live run. A
line may hold a batch envelope, which yields one outcome per item. The position of a
record is reported as topic = file name, partition 0, offset = line number, so errors
point at the line.

The event-time bound is taken against the clock at the start of reading (fixed for the
whole file), so a historical file decodes the same on every run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import IO, Any

from streamsync.ingest.config import DEFAULT_MAX_RECORD_BYTES, IngestConfig, TopicConfig
from streamsync.ingest.decoder import Decoder, Outcome, check_size, parse_json_object, wall_clock_ms
from streamsync.ingest.errors import DecodeError, DecodeReason
from streamsync.ingest.event import NO_CUSTOMER, Event, SourcePosition


@dataclass(frozen=True, slots=True)
class LineError:
    """A line (or an item of a batch on it) that could not be decoded."""

    line: int
    error: DecodeError

    def __str__(self) -> str:
        item = "" if self.error.index is None else f" item {self.error.index}"
        return f"line {self.line}{item}: {self.error.reason.value}: {self.error.detail}"


@dataclass(frozen=True, slots=True)
class Skipped:
    """A valid record that is not evaluated (``reason``: ``no_customer``, ``group``,
    ``alias``, ``empty_batch``): counted, not an error."""

    line: int
    reason: str = NO_CUSTOMER


def _json_twin(topic: TopicConfig, fmt: str) -> TopicConfig:
    return topic.model_copy(update={"format": fmt, "framing": "plain"})


@dataclass(frozen=True, slots=True)
class InputPolicy:
    """How file records are read: the topic settings (identity policy, size limit,
    clock skew) for Data Pipelines lines and for webhook lines."""

    pipelines: TopicConfig = field(
        default_factory=lambda: TopicConfig(name="pipelines", format="pipelines_json")
    )
    webhooks: TopicConfig = field(
        default_factory=lambda: TopicConfig(name="webhooks", format="webhook_json")
    )

    @classmethod
    def from_config(cls, ingest: IngestConfig) -> InputPolicy:
        """The first Data Pipelines topic and the first webhook topic of a configuration
        (JSON or Avro: only their policy is used); defaults for a kind it lacks."""
        default = cls()
        pipelines = next((t for t in ingest.topics if t.record_kind == "pipelines"), None)
        webhooks = next((t for t in ingest.topics if t.record_kind == "webhook"), None)
        return cls(
            default.pipelines if pipelines is None else _json_twin(pipelines, "pipelines_json"),
            default.webhooks if webhooks is None else _json_twin(webhooks, "webhook_json"),
        )


def is_webhook_record(record: dict[str, Any]) -> bool:
    """Whether a decoded JSON record is a reporting webhook rather than a Data Pipelines
    record: webhooks carry ``event_id`` and ``metric``."""
    return "event_id" in record and "metric" in record


class LineDecoder:
    """Decodes JSON lines of either kind under one :class:`InputPolicy` and one fixed
    reference clock (``now_ms``, default: the wall clock when it is built); ``links``
    decodes identity links (see :class:`~streamsync.ingest.decoder.Decoder`)."""

    def __init__(
        self, policy: InputPolicy | None = None, now_ms: int | None = None, *, links: bool = False
    ) -> None:
        policy = policy or InputPolicy()
        now = wall_clock_ms() if now_ms is None else now_ms
        self.pipelines = Decoder(policy.pipelines, clock_ms=lambda: now, links=links)
        self.webhooks = Decoder(policy.webhooks, clock_ms=lambda: now)
        self.max_record_bytes = policy.pipelines.max_record_bytes

    def decode_all(self, raw: bytes, source: SourcePosition) -> list[Outcome]:
        """Every outcome of one line, in order (errors returned, not raised)."""
        try:
            check_size(raw.rstrip(b"\r\n"), self.max_record_bytes)
            record = parse_json_object(raw)
        except DecodeError as exc:
            return [exc]
        decoder = self.webhooks if is_webhook_record(record) else self.pipelines
        return decoder.decode_record(record, None, source)


@cache
def _default_decoder(max_record_bytes: int) -> LineDecoder:
    policy = InputPolicy()
    if max_record_bytes != policy.pipelines.max_record_bytes:
        update = {"max_record_bytes": max_record_bytes}
        policy = InputPolicy(
            policy.pipelines.model_copy(update=update), policy.webhooks.model_copy(update=update)
        )
    return LineDecoder(policy)


def decode_line(
    raw: bytes, source: SourcePosition, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
) -> Event | None:
    """One JSON line holding one record -> ``Event``, ``None`` (not evaluated) or
    ``DecodeError`` raised, with the default policy and the same checks as a JSON topic.
    (The reference clock is the wall clock when first called.)"""
    outcomes = _default_decoder(max_record_bytes).decode_all(raw, source)
    if len(outcomes) != 1:
        raise DecodeError(DecodeReason.WRONG_TYPE, "a batch envelope: use read_events")
    outcome = outcomes[0]
    if isinstance(outcome, DecodeError):
        raise outcome
    return outcome if isinstance(outcome, Event) else None


def read_events(
    lines: Iterable[bytes],
    name: str = "-",
    *,
    policy: InputPolicy | None = None,
    now_ms: int | None = None,
    links: bool = False,
) -> Iterator[Event | LineError | Skipped]:
    """Decode every non-blank line (an open file, or any iterable of lines) in order;
    ``policy`` is the configuration's (:meth:`InputPolicy.from_config`), default the
    default topic settings. ``links`` decodes anonymous records and aliases as identity
    links, for a reader that resolves them (``replay`` with an identity section)."""
    decoder = LineDecoder(policy, now_ms, links=links)
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        for outcome in decoder.decode_all(raw, SourcePosition(name, 0, number)):
            if isinstance(outcome, Event):
                yield outcome
            elif isinstance(outcome, DecodeError):
                yield LineError(number, outcome)
            else:
                yield Skipped(number, outcome.reason)


def open_events(path: str | Path) -> IO[bytes]:
    """``-`` is standard input."""
    if str(path) == "-":
        return sys.stdin.buffer
    return Path(path).open("rb")
