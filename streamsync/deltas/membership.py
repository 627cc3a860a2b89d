"""The current-membership table: who is a member of which audience now, on Kafka.

The deltas topic says what changed; answering "who is in this audience now" from it
means folding every delta ever written. ``streamsync evaluate`` therefore also keeps a
compacted topic (``deltas.members_topic``, default ``<deltas topic>.members``) with one
record per customer and audience: the member's details on enter, a tombstone on exit.
It is written from every delta in the same transaction as the delta itself, so a
``read_committed`` reader of the table sees exactly the membership that the deltas
committed so far describe, across crashes and restarts; compaction keeps it about the
size of the current audiences, whatever the history.

Record format (stable: other tools read it):

* **key**: the JSON array ``["<audience>", "<customer id>"]`` as orjson writes it (UTF-8,
  no spaces), see :func:`member_key` and :func:`parse_member_key`. A JSON array is
  unambiguous for any audience name and customer id (neither has a reserved separator
  character) and is readable with any tool.
* **value** on enter: a JSON object (:class:`Member`)::

      {"audience": "ACT__CartAbandon__90m", "version": 1, "customer_id": "c1",
       "id_kind": "id", "identifiers": {"email": "a@example.com"},
       "since": "2026-11-25T10:00:00.000Z", "since_ms": 1795600800000, "seq": 3,
       "holdout": false}

  ``since`` is the event time of the enter (RFC 3339 and epoch milliseconds), ``seq``
  the enter's ``seq``. Holdout members are members (``holdout: true``); whether they are
  delivered is the destination's business.
* **value** on exit: none (a tombstone, which compaction eventually removes with the
  records before it).

Partitioning: a customer's records all go to one partition, so ``explain`` reads one
partition for one customer. It is the partition of the customer id (not of the record
key) under the producer's ``partitioner`` (``kafka.extra``, default librdkafka's
``consistent_random``, i.e. CRC-32), as for the deltas, which the table is partitioned
like; a partitioner that is not a key hash known here (``random``) falls back to CRC-32,
so the table stays compactable. The topic has the deltas topic's partition count;
:func:`member_partitioner` is the one function writers and readers both use.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Message

from streamsync.config import AppConfig
from streamsync.deltas.record import MembershipDelta, format_rfc3339_ms, parse_rfc3339_ms
from streamsync.errors import UserMistake
from streamsync.kafka.partitioner import DEFAULT_PARTITIONER, key_hash
from streamsync.kafka.reader import TopicReader

#: (audience, customer id): what one record of the table is about.
MemberKey = tuple[str, str]


class MembersTopicMissing(UserMistake):
    """The membership table does not exist on the cluster (``evaluate`` creates it when
    it starts); exit status 2, since another configuration or a first run is needed."""


@dataclass(frozen=True, slots=True)
class Member:
    """One current member of one audience: the value of a table record."""

    audience: str
    version: int
    customer_id: str
    #: event time of the enter
    since_ms: int
    #: the enter's ``seq``
    seq: int
    identifiers: dict[str, str] = field(default_factory=dict)
    holdout: bool = False
    id_kind: str = "id"

    @property
    def since(self) -> str:
        return format_rfc3339_ms(self.since_ms)

    @classmethod
    def from_enter(cls, delta: MembershipDelta) -> Member:
        return cls(
            audience=delta.audience,
            version=delta.version,
            customer_id=delta.customer_id,
            since_ms=delta.at_ms,
            seq=delta.seq,
            identifiers=dict(delta.identifiers),
            holdout=delta.holdout,
            id_kind=delta.id_kind,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "audience": self.audience,
            "version": self.version,
            "customer_id": self.customer_id,
            "id_kind": self.id_kind,
            "identifiers": dict(self.identifiers),
            "since": self.since,
            "since_ms": self.since_ms,
            "seq": self.seq,
            "holdout": self.holdout,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Member:
        since_ms = data.get("since_ms")
        if not isinstance(since_ms, int):
            since_ms = parse_rfc3339_ms(str(data["since"]))
        return cls(
            audience=str(data["audience"]),
            version=int(data["version"]),
            customer_id=str(data["customer_id"]),
            since_ms=since_ms,
            seq=int(data["seq"]),
            identifiers={str(k): str(v) for k, v in data.get("identifiers", {}).items()},
            holdout=bool(data.get("holdout", False)),
            id_kind=str(data.get("id_kind") or "id"),
        )


def member_key(audience: str, customer: str) -> bytes:
    """The record key of ``customer`` in ``audience`` (see the module docstring)."""
    return orjson.dumps((audience, customer))


def parse_member_key(key: bytes) -> MemberKey:
    """(audience, customer id) from a record key; ``ValueError`` when it is not one."""
    data = orjson.loads(key)
    if not (
        isinstance(data, list) and len(data) == 2 and all(isinstance(part, str) for part in data)
    ):
        raise ValueError(f"not a membership key: {key[:80]!r}")
    return data[0], data[1]


def encode_member(delta: MembershipDelta) -> bytes:
    """The value for an enter ``delta`` (what :meth:`Member.to_json` writes), built from
    the delta directly: this runs for every enter the evaluate service writes."""
    return orjson.dumps(
        {
            "audience": delta.audience,
            "version": delta.version,
            "customer_id": delta.customer_id,
            "id_kind": delta.id_kind,
            "identifiers": delta.identifiers,
            "since": format_rfc3339_ms(delta.at_ms),
            "since_ms": delta.at_ms,
            "seq": delta.seq,
            "holdout": delta.holdout,
        }
    )


def decode_member(value: bytes) -> Member:
    return Member.from_json(orjson.loads(value))


def member_partitioner(config: AppConfig, partitions: int) -> Callable[[bytes], int]:
    """Customer id (UTF-8) -> its partition of a table of ``partitions`` partitions; see
    the module docstring."""
    partitioner = str(config.kafka.extra.get("partitioner", DEFAULT_PARTITIONER))
    hash_ = key_hash(partitioner) or zlib.crc32
    return lambda customer: hash_(customer) % partitions


@dataclass(frozen=True, slots=True)
class MembersProgress:
    """Where a running read of the table is, for a progress line."""

    records_read: int
    members: int
    elapsed_s: float


@dataclass
class MembershipTable:
    """What a read of the table found: the latest value of every key read."""

    topic: str
    #: the partitions read (one for one customer)
    partitions: list[int]
    members: dict[MemberKey, Member] = field(default_factory=dict)
    #: records read, tombstones and other customers' records included
    records_read: int = 0
    #: records whose key or value is not of the table's format (skipped)
    undecodable: int = 0
    #: whether every partition was read to its end (not cut by the timeout)
    complete: bool = True

    def audiences_of(self, customer: str) -> list[Member]:
        """``customer``'s memberships, by audience name."""
        found = [m for (_, c), m in self.members.items() if c == customer]
        return sorted(found, key=lambda m: m.audience)


def read_members(
    config: AppConfig,
    *,
    timeout_s: float = 300.0,
    progress: Callable[[MembersProgress], None] | None = None,
    progress_interval_s: float = 2.0,
) -> MembershipTable:
    """The whole table, ``read_committed``, from every partition's oldest record to its
    end as of the start of the read (later writes are not waited for). Raises
    :class:`MembersTopicMissing` when the topic does not exist and
    :class:`~streamsync.kafka.health.KafkaUnavailable` when the cluster does not answer;
    a read cut by ``timeout_s`` is returned with ``complete`` false."""
    return _read(config, None, timeout_s, progress, progress_interval_s)


def read_customer_members(
    config: AppConfig,
    customer: str,
    *,
    timeout_s: float = 60.0,
    progress: Callable[[MembersProgress], None] | None = None,
    progress_interval_s: float = 2.0,
) -> MembershipTable:
    """``customer``'s current memberships: the one partition their records are in, read
    whole as :func:`read_members` reads every partition, keeping only their keys."""
    return _read(config, customer, timeout_s, progress, progress_interval_s)


def _read(
    config: AppConfig,
    customer: str | None,
    timeout_s: float,
    progress: Callable[[MembersProgress], None] | None,
    progress_interval_s: float,
) -> MembershipTable:
    started = time.monotonic()
    reader = TopicReader(config, started + timeout_s, name="members")
    try:
        topic = config.deltas.members
        count = reader.topics().get(topic)
        if count is None:
            raise MembersTopicMissing(
                f"membership topic {topic} does not exist on {reader.bootstrap} "
                "(deltas.members_topic; evaluate creates it when it starts)"
            )
        if customer is None:
            partitions = list(range(count))
            # Only the customer id ends a key, as orjson writes it: a cheap test before
            # parsing (an escaped quote cannot end a key's first element early).
            suffix = b""
        else:
            partitions = [member_partitioner(config, count)(customer.encode())]
            suffix = b"," + orjson.dumps(customer) + b"]"
        table = MembershipTable(topic, partitions)
        members = table.members
        last = [started]

        def handle(message: Message) -> bool:
            table.records_read += 1
            key = message.key()
            if key is None or not key.endswith(suffix):
                return False
            value = message.value()
            try:
                parsed = parse_member_key(key)
                if customer is not None and parsed[1] != customer:
                    return False
                if value is None:
                    members.pop(parsed, None)
                else:
                    members[parsed] = decode_member(value)
            except (ValueError, KeyError, TypeError, AttributeError):
                table.undecodable += 1
            return False

        def tick() -> None:
            now = time.monotonic()
            if progress is not None and now - last[0] >= progress_interval_s:
                last[0] = now
                progress(MembersProgress(table.records_read, len(members), now - started))

        stopped = reader.read([(topic, p) for p in partitions], handle, tick)
        table.complete = stopped is None
        return table
    finally:
        reader.close()
