"""What one destination has confirmed: the acknowledged half of reconciliation.

Delivery compares what a destination *should* hold (:mod:`~streamsync.destinations.desired`)
with what it *was told and confirmed*, and sends only the difference
(:mod:`~streamsync.destinations.reconcile`). The second half is kept here, per deliver
consumer group, as one record per audience and customer the destination holds a value
for: the identity the value was written under (a remove goes to exactly that profile) and
whether it was the holdout marker.

Where it lives, and why this design:

* **A compacted changelog topic** per deliver group, ``<group>.acknowledged``, keyed like
  the membership table (``["<audience>","<customer id>"]``) and partitioned like the
  deltas topic (the record goes to the partition of the delta or table record it answers),
  so the deliver replica that owns deltas partition ``p`` owns exactly partition ``p`` of
  this topic. A value is written when the destination acknowledged an add, a tombstone
  when it acknowledged a remove; compaction keeps the topic about as large as the
  destination's current memberships.
* **A plain in-memory map** per owned partition, rebuilt on every assignment by reading
  the partition whole (start-up, rebalance, a replica added or removed). Unlike evaluate's
  state this needs no RocksDB and no checkpoint: the map is one small record per member,
  read back at hundreds of thousands of records a second, and a Deployment needs no
  volume. What survives a restart, a rebalance or a replica change is the topic.
* **Intents before adds.** Recording after the destination answered leaves a window: the
  value is on the profile, the process dies before the record is written, and a later exit
  would be skipped as "never added" - a value left forever. So before a batch is sent, each
  add of a value not confirmed yet is written (and flushed) as *pending*: the value may be
  on the profile. A pending entry is resolved by the next comparison either way (sent
  again if still desired, removed if not), so no value is ever left behind; removes need no
  intent (one confirmed but not recorded is simply sent again, to a profile that had it).

Offsets of the deltas topic are committed after this topic is flushed, so everything a
committed delta caused is on record.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streamsync.config import AppConfig
from streamsync.deltas.membership import MemberKey, member_key, parse_member_key
from streamsync.destinations.client import Change
from streamsync.kafka.health import KafkaUnavailable
from streamsync.kafka.reader import TopicReader

log = logging.getLogger("streamsync.deliver")

#: The changelog's settings: compacted, so it keeps the latest record per key.
ACKNOWLEDGED_CONFIG = {"cleanup.policy": "compact"}
#: How long reading one assignment's partitions back may take.
RESTORE_TIMEOUT_S = 300.0


def acknowledged_topic(group: str) -> str:
    """The changelog topic of the deliver consumer group ``group``."""
    return f"{group}.acknowledged"


@dataclass(slots=True)
class Acked:
    """The value one destination holds (or may hold) for one audience and customer."""

    #: what the destination calls the customer (as the client's ``identify`` returned it)
    identity: Any
    #: the value is the holdout marker (``<audience><holdout_suffix>``)
    holdout: bool
    #: an add was sent and its answer is not on record: the value may be there or not
    pending: bool = False


def same_identity(a: Any, b: Any) -> bool:
    """Whether two identities name the same profile. Compared as JSON: an identity read
    back from the changelog is a list where ``identify`` returned a tuple."""
    return orjson.dumps(a, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        b, option=orjson.OPT_SORT_KEYS
    )


def holds(entry: Acked, identity: Any, holdout: bool) -> bool:
    """Whether the confirmed ``entry`` is the value an add of ``identity`` and ``holdout``
    would write: same profile, same value name (the audience, or its holdout marker). An
    entry that is not is moved: removed where it is, added where it should be."""
    return (
        not entry.pending and entry.holdout == holdout and same_identity(entry.identity, identity)
    )


def encode_acked(entry: Acked) -> bytes:
    return orjson.dumps({"identity": entry.identity, "holdout": entry.holdout,
                         "pending": entry.pending})  # fmt: skip


def decode_acked(value: bytes) -> Acked:
    data = orjson.loads(value)
    return Acked(data["identity"], bool(data.get("holdout")), bool(data.get("pending")))


class AcknowledgedState:
    """The acknowledged map of the partitions this process owns, and its changelog.

    Without a producer (a dry run, the sink's unit tests) it is kept in memory only: a dry
    run reads what was acknowledged but never records what it did not send."""

    def __init__(self, producer: Producer | None = None, topic: str = "") -> None:
        self.producer = producer
        self.topic = topic
        self._partitions: dict[int, dict[MemberKey, Acked]] = {}
        #: entries as they were before the in-flight batch wrote its intents
        self._before: dict[tuple[int, MemberKey], Acked | None] = {}
        self.written = 0
        self.restored = 0

    # -- reading -----------------------------------------------------------------------

    def get(self, partition: int, audience: str, customer: str) -> Acked | None:
        entries = self._partitions.get(partition)
        return None if entries is None else entries.get((audience, customer))

    def entries(self, partition: int) -> Mapping[MemberKey, Acked]:
        return self._partitions.get(partition, {})

    def count(self) -> int:
        return sum(len(e) for e in self._partitions.values())

    def counts(self) -> tuple[Counter[str], Counter[str]]:
        """Per audience: confirmed values and pending ones, on the partitions owned here."""
        confirmed: Counter[str] = Counter()
        pending: Counter[str] = Counter()
        for entries in self._partitions.values():
            for (audience, _), entry in entries.items():
                (pending if entry.pending else confirmed)[audience] += 1
        return confirmed, pending

    def restore(self, config: AppConfig, partitions: Iterable[int]) -> int:
        """Rebuild the map of ``partitions`` from the changelog (records read); a missing
        topic or partition means nothing was acknowledged there yet."""
        wanted = sorted(partitions)
        for partition in wanted:
            self._partitions[partition] = {}
        if not wanted or not self.topic:
            return 0
        deadline = time.monotonic() + RESTORE_TIMEOUT_S
        reader = TopicReader(config, deadline, name="acknowledged")
        read = 0
        try:
            count = reader.topics().get(self.topic, 0)
            present = [(self.topic, p) for p in wanted if p < count]

            def handle(message: Message) -> bool:
                nonlocal read
                read += 1
                key, value = message.key(), message.value()
                partition = message.partition()
                if key is None or partition is None:
                    return False
                try:
                    parsed = parse_member_key(key)
                    entries = self._partitions[partition]
                    if value is None:
                        entries.pop(parsed, None)
                    else:
                        entries[parsed] = decode_acked(value)
                except (ValueError, KeyError, TypeError):
                    log.warning("%s: undecodable record skipped", self.topic)
                return False

            # A topic created a moment ago may have no leader yet: its offsets cannot be
            # asked for, so the read is tried again (from scratch) until the deadline.
            while reader.read(present, handle, lambda: None) is not None:
                if time.monotonic() >= deadline:
                    raise KafkaUnavailable(
                        f"reading {self.topic} back took over {RESTORE_TIMEOUT_S:.0f}s"
                    )
                for partition in wanted:
                    self._partitions[partition] = {}
                time.sleep(0.2)
        finally:
            reader.close()
        self.restored += read
        return read

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the map of partitions this process no longer owns (their new owner reads
        them back)."""
        for partition in partitions:
            self._partitions.pop(partition, None)
        self._before = {k: v for k, v in self._before.items() if k[0] in self._partitions}

    # -- writing -----------------------------------------------------------------------

    def _put(self, partition: int, key: MemberKey, entry: Acked | None) -> None:
        entries = self._partitions.setdefault(partition, {})
        if entry is None:
            entries.pop(key, None)
        else:
            entries[key] = entry
        if self.producer is not None:
            value = None if entry is None else encode_acked(entry)
            self.producer.produce(
                self.topic, key=member_key(*key), value=value, partition=partition,
                on_delivery=self._delivered,
            )  # fmt: skip
            self.written += 1

    @staticmethod
    def _delivered(error: KafkaError | None, _message: Message) -> None:
        if error is not None:  # the next comparison resends what is not on record
            log.warning("acknowledged state: a record was not written: %s", error)

    def begin(self, changes: Iterable[Change]) -> None:
        """Record intents for the adds of a batch about to be sent (see the module
        docstring), and wait until they are written."""
        wrote = False
        for change in changes:
            if not change.enter:
                continue
            key = (change.audience, change.customer_id)
            current = self.get(change.partition, *key)
            if current is not None and current.pending:
                continue  # already on record as maybe there
            self._before[(change.partition, key)] = current
            self._put(change.partition, key, Acked(change.identity, change.holdout, True))
            wrote = True
        if wrote and self.producer is not None:
            self.producer.flush(30)

    def settle(self, acked: Iterable[Change], refused: Iterable[Change]) -> None:
        """The destination confirmed ``acked`` and refused ``refused`` (nothing of a
        refused change was applied)."""
        for change in acked:
            key = (change.audience, change.customer_id)
            self._before.pop((change.partition, key), None)
            entry = Acked(change.identity, change.holdout) if change.enter else None
            self._put(change.partition, key, entry)
        for change in refused:
            key = (change.audience, change.customer_id)
            where = (change.partition, key)
            if where in self._before:  # undo the intent: the add was not applied
                self._put(change.partition, key, self._before.pop(where))
        if self.producer is not None:
            self.producer.poll(0)

    def resend(self, partitions: Iterable[int], audience: str | None = None) -> int:
        """Mark every confirmed entry of ``partitions`` (of ``audience``; ``None``: all)
        as pending, so the next comparison sends each desired one again: a resync that
        survives a restart or a rebalance half-way, since the marks are on the changelog.
        The number marked."""
        marked = 0
        for partition in partitions:
            for key, entry in list(self._partitions.get(partition, {}).items()):
                if entry.pending or (audience is not None and key[0] != audience):
                    continue
                self._put(partition, key, Acked(entry.identity, entry.holdout, True))
                marked += 1
        self.flush()
        return marked

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every record is written (before offsets are committed)."""
        if self.producer is not None:
            self.producer.flush(timeout_s)


def ensure_topic(admin: AdminClient, topic: str, partitions: int, timeout_s: float = 30.0) -> int:
    """Create the changelog (compacted, ``partitions`` like the deltas topic) unless it
    exists; its partition count. ``KafkaException`` when Kafka does not answer within
    ``timeout_s``."""
    metadata = admin.list_topics(timeout=timeout_s)
    existing = metadata.topics.get(topic)
    if existing is not None and existing.error is None:
        return len(existing.partitions)
    futures = admin.create_topics([NewTopic(topic, partitions, -1, config=ACKNOWLEDGED_CONFIG)])
    for future in futures.values():
        try:
            future.result(timeout_s)
            log.info("created topic %s", topic)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if not (
                isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS
            ):
                raise
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:  # metadata is eventually consistent
        found = admin.list_topics(topic, timeout=10).topics.get(topic)
        if found is not None and found.error is None and len(found.partitions) >= partitions:
            break
        time.sleep(0.2)
    return partitions
