"""The last dead letters of every stage, with their reasons, for the dead-letters page.

Each stage writes what it could not use to its dead-letter topic with why in the headers
(:mod:`streamsync.dead_letter`): ingest and evaluate to ``ingest.dead_letter_topic``,
each destination's deliver to its ``dead_letter_topic``. The page reads the end of each
of those topics - the last offsets of every partition, ``read_committed``, no group,
nothing written - and shows the newest :data:`KEPT` by time, from the headers only: the
reason, the detail or the vendor's message, the destination and HTTP status, the source
record's position, and the record's key (the customer id; the value, which may hold
personal data beyond it, is never shown). Keys are user input: the template escapes
them like everything else, and the page is behind sign-in like every page.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from streamsync.config import AppConfig
from streamsync.dead_letter import (
    DESTINATION_HEADER,
    DETAIL_HEADER,
    MESSAGE_HEADER,
    OFFSET_HEADER,
    PARTITION_HEADER,
    REASON_HEADER,
    STATUS_HEADER,
    TOPIC_HEADER,
    TRUNCATED_HEADER,
)
from streamsync.kafka.reader import TIMEOUT, TopicReader

#: Dead letters the page shows (the newest, over every dead-letter topic).
KEPT = 100
#: Longest header text shown (a vendor's message can be long).
TEXT_MAX = 500


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    #: ``ingest`` (ingest and evaluate) or ``deliver``
    stage: str
    partition: int
    offset: int
    #: the dead letter's Kafka timestamp (epoch ms), ``None`` without one
    timestamp_ms: int | None
    reason: str
    #: the detail sentence (ingest, evaluate) or the vendor's message (deliver)
    message: str
    destination: str
    status: str
    #: the record's key as text: the customer id (user input)
    key: str
    #: ``topic[partition]@offset`` of the record that failed
    source: str
    truncated: bool


@dataclass
class DeadLetters:
    entries: list[DeadLetter] = field(default_factory=list)
    #: dead-letter topics read, and those that do not exist (yet)
    topics: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    complete: bool = True


def dead_letter_topics(config: AppConfig) -> dict[str, str]:
    """Dead-letter topic -> the stage that writes it."""
    topics = {config.ingest.dead_letter_topic: "ingest"}
    for dest in config.destinations.values():
        topics.setdefault(dest.dead_letter_topic, "deliver")
    return topics


def read_dead_letters(
    config: AppConfig, *, kept: int = KEPT, timeout_s: float = 60.0
) -> DeadLetters:
    """The newest ``kept`` dead letters of :func:`dead_letter_topics`; raises
    :class:`~streamsync.kafka.health.KafkaUnavailable` when the cluster does not answer."""
    wanted = dead_letter_topics(config)
    found = DeadLetters(topics=sorted(wanted))
    reader = TopicReader(config, time.monotonic() + timeout_s, name="console-dead-letters")
    entries: list[DeadLetter] = []
    try:
        counts = reader.topics()
        partitions: list[tuple[str, int]] = []
        for topic in sorted(wanted):
            if topic not in counts:
                found.missing.append(topic)
                continue
            partitions.extend((topic, p) for p in range(counts[topic]))

        def handle(message: Message) -> bool:
            entries.append(_entry(message, wanted))
            return False

        # Transaction markers take offsets too: read twice as many, keep the newest.
        if partitions:
            done = reader.read(partitions, handle, lambda: None, last=2 * kept)
            found.complete = done != TIMEOUT
    finally:
        reader.close()
    entries.sort(key=lambda e: (e.timestamp_ms or 0, e.topic, e.partition, e.offset), reverse=True)
    found.entries = entries[:kept]
    return found


def _entry(message: Message, stages: dict[str, str]) -> DeadLetter:
    headers: dict[str, str] = {}
    raw: list[tuple[str, bytes | None]] = list(message.headers() or [])  # type: ignore[arg-type]
    for name, value in raw:
        if isinstance(value, bytes):
            headers[name] = value.decode("utf-8", "replace")[:TEXT_MAX]
    kind, stamp = message.timestamp()
    topic = message.topic() or ""
    source = ""
    if TOPIC_HEADER in headers:
        source = f"{headers[TOPIC_HEADER]}[{headers.get(PARTITION_HEADER, '?')}]"
        source += f"@{headers.get(OFFSET_HEADER, '?')}"
    key = message.key()
    return DeadLetter(
        topic=topic,
        stage=stages.get(topic, "?"),
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        timestamp_ms=None if kind == TIMESTAMP_NOT_AVAILABLE else int(stamp),
        reason=headers.get(REASON_HEADER, "(no reason header)"),
        message=headers.get(DETAIL_HEADER) or headers.get(MESSAGE_HEADER, ""),
        destination=headers.get(DESTINATION_HEADER, ""),
        status=headers.get(STATUS_HEADER, ""),
        key="" if key is None else key.decode("utf-8", "replace")[:TEXT_MAX],
        source=source,
        truncated=TRUNCATED_HEADER in headers,
    )
