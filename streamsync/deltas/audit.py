"""Live audit: one customer's membership history and its qualifying records, from Kafka.

``streamsync explain --config FILE --customer ID`` answers "why did this customer get
this push?" from what the evaluate service actually wrote, not from a replay:

1. the deltas topic is read ``read_committed`` (only deltas of committed transactions,
   exactly the ones delivery saw). Deltas are keyed by customer id, so they all sit in
   the partition the producer's partitioner chose for that key; it is computed with the
   same partitioner (:mod:`streamsync.kafka.partitioner`, from ``kafka.extra``'s
   ``partitioner``, default librdkafka's), or every partition is read when the
   partitioner is not a known key hash. Records are still filtered by key.
2. every delta names the records that qualified it (``record_ids``); the configured
   input topics are scanned from their oldest retained record and decoded with each
   topic's :class:`~streamsync.ingest.decoder.Decoder` (the same policy as the live run),
   keeping the customer's records with those ids. The scan stops as soon as every id is
   found, at the end of the topics, after ``max_records`` records or at the deadline.

On a JSON topic a record that cannot name the customer is not decoded: when the customer
id is plain printable ASCII (no quote, backslash or slash, which JSON may escape) a record
neither keyed by it nor containing its bytes cannot be the customer's (a numeric id is
written with the same digits), and decoding is what costs. Avro records (binary numbers)
are always decoded. Nothing here commits offsets or joins a consumer group.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Message

from streamsync.config import AppConfig
from streamsync.deltas.codec import delta_decoder
from streamsync.deltas.record import MembershipDelta
from streamsync.errors import UserMistake
from streamsync.ingest.decoder import Decoder, record_time_ms
from streamsync.ingest.event import Event, SourcePosition
from streamsync.ingest.registry_client import configured_registry
from streamsync.kafka.partitioner import DEFAULT_PARTITIONER, partition_for
from streamsync.kafka.reader import TopicReader

#: Why a scan of the input topics ended early (``CustomerAudit.stopped_by``; also
#: :data:`~streamsync.kafka.reader.TIMEOUT`).
MAX_RECORDS = "max_records"


class AuditError(UserMistake):
    """The question cannot be answered with this configuration; the message says why
    (exit status 2)."""


@dataclass(frozen=True, slots=True)
class AuditProgress:
    """Where a running audit is, for a progress line."""

    phase: str  # "deltas" or "records"
    deltas_read: int
    records_read: int
    found: int
    wanted: int
    elapsed_s: float


@dataclass
class CustomerAudit:
    """What Kafka holds about one customer's memberships."""

    customer: str
    deltas_topic: str
    #: deltas partitions read (one when the partitioner is known)
    partitions: list[int]
    #: the customer's deltas in topic order (per audience: seq order)
    deltas: list[MembershipDelta] = field(default_factory=list)
    #: qualifying records found: record id -> event (its source is topic/partition/offset)
    records: dict[str, Event] = field(default_factory=dict)
    input_topics: list[str] = field(default_factory=list)
    #: configured input topics that do not exist on the cluster
    missing_topics: list[str] = field(default_factory=list)
    deltas_read: int = 0
    undecodable_deltas: int = 0
    records_read: int = 0
    #: records of this customer seen during the scan (qualifying or not)
    customer_records: int = 0
    #: ``None`` when everything needed was read; else MAX_RECORDS or TIMEOUT
    stopped_by: str | None = None
    #: whether the deltas partition(s) were read to their end (not cut by the timeout)
    deltas_complete: bool = True

    @property
    def wanted(self) -> list[str]:
        """Every qualifying record id named by the deltas, first mention first."""
        return list(dict.fromkeys(rid for d in self.deltas for rid in d.record_ids))

    @property
    def not_found(self) -> list[str]:
        return [rid for rid in self.wanted if rid not in self.records]


def prefilter_needle(customer: str) -> bytes | None:
    """The bytes every record of ``customer`` contains (in its key or value), or ``None``
    when the id holds characters an encoder may escape (then every record is decoded)."""
    plain = customer.isascii() and customer.isprintable()
    if customer and plain and not any(ch in customer for ch in '"\\/'):
        return customer.encode()
    return None


def audit_customer(
    config: AppConfig,
    customer: str,
    *,
    audience: str | None = None,
    max_records: int | None = None,
    timeout_s: float = 60.0,
    progress: Callable[[AuditProgress], None] | None = None,
    progress_interval_s: float = 2.0,
) -> CustomerAudit:
    """Read ``customer``'s deltas (only ``audience``'s, when given) and their qualifying
    records; see the module docstring. Raises :class:`KafkaUnavailable` when the cluster
    does not answer and :class:`AuditError` when the deltas topic does not exist."""
    started = time.monotonic()
    reader = TopicReader(config, started + timeout_s)
    try:
        return _audit(
            reader, config, customer, audience, max_records, started, progress, progress_interval_s
        )
    finally:
        reader.close()


def _audit(
    reader: TopicReader,
    config: AppConfig,
    customer: str,
    audience: str | None,
    max_records: int | None,
    started: float,
    progress: Callable[[AuditProgress], None] | None,
    progress_interval_s: float,
) -> CustomerAudit:
    topics = reader.topics()
    deltas_topic = config.deltas.topic
    if deltas_topic not in topics:
        raise AuditError(
            f"deltas topic {deltas_topic} does not exist on {reader.bootstrap} "
            "(deltas.topic; evaluate creates it when it starts)"
        )
    key = customer.encode()
    count = topics[deltas_topic]
    partitioner = str(config.kafka.extra.get("partitioner", DEFAULT_PARTITIONER))
    computed = partition_for(key, count, partitioner)
    audit = CustomerAudit(
        customer,
        deltas_topic,
        list(range(count)) if computed is None else [computed],
        input_topics=[t.name for t in config.ingest.topics],
    )
    phase = ["deltas"]
    last = [started]
    wanted: set[str] = set()

    def tick() -> None:
        now = time.monotonic()
        if progress is not None and now - last[0] >= progress_interval_s:
            last[0] = now
            progress(
                AuditProgress(
                    phase[0],
                    audit.deltas_read,
                    audit.records_read,
                    len(audit.records),
                    len(wanted),
                    now - started,
                )
            )

    decode = delta_decoder(config.deltas.format)

    def on_delta(message: Message) -> bool:
        audit.deltas_read += 1
        if message.key() != key:
            return False
        try:
            delta = decode(message.value() or b"")
        except (ValueError, KeyError, TypeError, EOFError, IndexError):
            audit.undecodable_deltas += 1
            return False
        if delta.customer_id == customer and (audience is None or delta.audience == audience):
            audit.deltas.append(delta)
        return False

    audit.stopped_by = reader.read([(deltas_topic, p) for p in audit.partitions], on_delta, tick)
    audit.deltas_complete = audit.stopped_by is None
    wanted.update(audit.wanted)
    if audit.stopped_by is not None or not wanted:
        return audit

    phase[0] = "records"
    audit.missing_topics = [t for t in audit.input_topics if t not in topics]
    # The registry evaluate decodes with (a Schema Registry or a folder of .avsc files).
    registry = configured_registry(config.ingest)
    decoders = {t.name: Decoder(t, registry) for t in config.ingest.topics if t.name in topics}
    plain = prefilter_needle(customer)
    needles = {t.name: None if t.is_avro else plain for t in config.ingest.topics}
    found = audit.records
    limit = max_records if max_records is not None else -1
    limited = [False]

    def on_record(message: Message) -> bool:
        audit.records_read += 1
        if audit.records_read == limit:
            limited[0] = True
        value = message.value()
        name = message.topic() or ""
        needle = needles[name]
        if needle is not None and message.key() != needle and (not value or needle not in value):
            return limited[0]
        source = SourcePosition(name, message.partition() or 0, message.offset() or 0)
        record_ms = record_time_ms(message)
        for outcome in decoders[name].decode_all(value, message.key(), source, record_ms):
            if type(outcome) is Event and outcome.customer_id == customer:
                audit.customer_records += 1
                rid = outcome.record_id
                if rid in wanted and rid not in found:
                    found[rid] = outcome
        return len(found) == len(wanted) or limited[0]

    partitions = [(name, p) for name in decoders for p in range(topics[name])]
    audit.stopped_by = reader.read(partitions, on_record, tick)
    if audit.stopped_by is None and limited[0] and len(found) < len(wanted):
        audit.stopped_by = MAX_RECORDS
    return audit
