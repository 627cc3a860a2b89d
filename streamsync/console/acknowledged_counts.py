"""Per audience, how many memberships a destination has acknowledged.

Deliver keeps what each destination confirmed in the compacted ``<deliver
group>.acknowledged`` topic (:mod:`streamsync.destinations.acknowledged`): one record per
audience and customer, a tombstone when a remove was confirmed. Read whole with an
assign-only ``read_committed`` reader (no group, nothing written) and folded to the
latest value per key, it says what the destination holds: the count per audience is
what a retention manager compares with the audience's size. Entries still *pending* (an
add sent, its answer not on record) and holdout markers are counted apart, so the
acknowledged number is only what the destination confirmed.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import Message

from streamsync.config import AppConfig
from streamsync.deltas.membership import MemberKey, parse_member_key
from streamsync.destinations.acknowledged import acknowledged_topic, decode_acked
from streamsync.kafka.reader import TIMEOUT, TopicReader


@dataclass
class AcknowledgedCounts:
    """What a read of one destination's acknowledged topic found."""

    destination: str
    topic: str
    #: audience -> members the destination confirmed (holdout markers and pending apart)
    acknowledged: Counter[str] = field(default_factory=Counter)
    holdout: Counter[str] = field(default_factory=Counter)
    pending: Counter[str] = field(default_factory=Counter)
    records_read: int = 0
    undecodable: int = 0
    #: the topic exists (deliver creates it when it first starts)
    exists: bool = True
    #: every partition was read to its end before the timeout
    complete: bool = True


def read_acknowledged(
    config: AppConfig, destination: str, *, timeout_s: float = 60.0
) -> AcknowledgedCounts:
    """The counts of ``destination``'s deliver group; raises
    :class:`~streamsync.kafka.health.KafkaUnavailable` when the cluster does not answer."""
    group = config.destinations[destination].consumer_group(destination)
    topic = acknowledged_topic(group)
    counts = AcknowledgedCounts(destination, topic)
    reader = TopicReader(config, time.monotonic() + timeout_s, name="console-acknowledged")
    latest: dict[MemberKey, tuple[bool, bool] | None] = {}
    try:
        partitions = reader.topics().get(topic)
        if partitions is None:
            counts.exists = False
            return counts

        def handle(message: Message) -> bool:
            counts.records_read += 1
            key, value = message.key(), message.value()
            try:
                parsed = parse_member_key(key or b"")
                if value is None:
                    latest[parsed] = None
                else:
                    entry = decode_acked(value)
                    latest[parsed] = (entry.holdout, entry.pending)
            except (ValueError, KeyError, TypeError):
                counts.undecodable += 1
            return False

        done = reader.read([(topic, p) for p in range(partitions)], handle, lambda: None)
        counts.complete = done != TIMEOUT
    finally:
        reader.close()
    for (audience, _), entry in latest.items():
        if entry is None:
            continue
        holdout, pending = entry
        if pending:
            counts.pending[audience] += 1
        elif holdout:
            counts.holdout[audience] += 1
        else:
            counts.acknowledged[audience] += 1
    return counts
