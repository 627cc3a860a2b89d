"""Writing into the open transaction: deltas, the membership table, dead letters,
changelog and marks.

Like Kafka Streams' RecordCollector: every record the service writes goes through
:meth:`Collector.send`, which begins the transaction on the first write of a cycle and
waits for the local queue to drain when it is full (``BufferError``), instead of
dropping or failing. Committing and aborting are :mod:`streamsync.runtime.checkpoint`'s.

Every delta is written twice in the same transaction: to the deltas topic, and to the
current-membership table (:mod:`streamsync.deltas.membership`) as the member on enter or
a tombstone on exit. The table therefore never shows a membership the committed deltas
do not, and an aborted cycle leaves neither.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streamsync.config import AppConfig
from streamsync.dead_letter import DeadLetterWriter
from streamsync.deltas.codec import SCHEMA_PATH, encode_avro, encode_json
from streamsync.deltas.membership import encode_member, member_key
from streamsync.deltas.record import ENTER, MembershipDelta
from streamsync.ingest.avro import confluent_frame
from streamsync.ingest.registry_client import register_subject
from streamsync.runtime.errors import RestartRequired
from streamsync.runtime.stats import EvaluateStats
from streamsync.runtime.telemetry import EvaluateTelemetry, Headers

DeliveryCallback = Callable[[KafkaError | None, Message], None]


def delta_encoder(config: AppConfig) -> Callable[[MembershipDelta], bytes]:
    """The value of a delta record in the configured ``deltas.format``."""
    if config.deltas.format == "json":
        return encode_json
    schema_id = config.evaluate.delta_schema_id if config.evaluate is not None else 1
    registry = config.ingest.schema_registry
    if config.deltas.subject is not None and registry is not None:
        # The id the registry gives the schema under the subject: readers find it there.
        text = SCHEMA_PATH.read_text("utf-8")
        schema_id = register_subject(registry, config.deltas.subject, text)
    return lambda d: confluent_frame(schema_id, encode_avro(d))


class Collector:
    """Produces into ``producer``'s open transaction; see the module docstring."""

    def __init__(
        self,
        producer: Producer,
        *,
        deltas_topic: str,
        members_topic: str,
        member_partition: Callable[[bytes], int],
        dead_letter_topic: str,
        encode: Callable[[MembershipDelta], bytes],
        dead_letter_max: int | None,
        stats: EvaluateStats,
        telemetry: EvaluateTelemetry,
    ) -> None:
        self.producer = producer
        self.deltas_topic = deltas_topic
        self.members_topic = members_topic
        #: customer id (UTF-8) -> its partition of the membership table
        self.member_partition = member_partition
        self.dead_letter_topic = dead_letter_topic
        self.encode = encode
        self.dead_letter_max = dead_letter_max
        self.stats = stats
        self.telemetry = telemetry
        #: a transaction is open (begun by the first write since the last commit/abort)
        self.in_txn = False
        #: dead letters, written into the open transaction
        self.dead_letters = DeadLetterWriter(
            None, dead_letter_topic, dead_letter_max, send=self.send
        )
        #: the consumed record, byte for byte, with why (see :mod:`streamsync.dead_letter`)
        self.dead_letter = self.dead_letters.record

    def begin(self) -> Producer:
        """The producer, inside a transaction."""
        producer = self.producer
        if not self.in_txn:
            producer.begin_transaction()
            self.in_txn = True
        return producer

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: Headers | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> None:
        producer = self.begin()
        kwargs: dict[str, Any] = {}
        if partition is not None:
            kwargs["partition"] = partition
        if headers is not None:
            kwargs["headers"] = headers
        if on_delivery is not None:
            kwargs["on_delivery"] = on_delivery
        while True:
            try:
                producer.produce(topic, value=value, key=key, **kwargs)
                return
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.05)
            except KafkaException as exc:  # the producer is in a fatal state
                raise RestartRequired(
                    f"the transactional producer cannot go on: {exc.args[0] if exc.args else exc}"
                ) from None

    def deltas(self, deltas: list[MembershipDelta], partition: int) -> None:
        """Produce the deltas of task ``partition``, each with the trace context of the
        records that qualified it when the telemetry follows traces, and each one's
        record of the membership table (the member, or a tombstone on exit)."""
        topic = self.deltas_topic
        members = self.members_topic
        member_partition = self.member_partition
        encode = self.encode
        stats = self.stats
        counts = stats.delta_counts
        telemetry = self.telemetry
        telemetry.emitted(deltas, partition)
        if not deltas:
            return
        trace = telemetry.trace_headers if telemetry.tracing else None
        send = self.send
        # ``produce`` straight away (two per delta): :meth:`send`'s keyword dict and
        # transaction check cost more than the call. A full queue or a fatal producer
        # state goes through :meth:`send`, which waits or raises RestartRequired.
        produce = self.begin().produce
        for delta in deltas:
            headers = None if trace is None else trace(delta)
            cid = delta.customer_id
            customer = cid.encode()
            value = encode(delta)
            try:
                produce(topic, value, customer, headers=headers)
            except (BufferError, KafkaException):
                send(topic, customer, value, headers=headers)
            key = member_key(delta.audience, cid)
            member = encode_member(delta) if delta.op == ENTER else None
            to = member_partition(customer)
            try:
                produce(members, member, key, partition=to)
            except (BufferError, KafkaException):
                send(members, key, member, partition=to)
            counts[(delta.audience, delta.op)] += 1
        stats.deltas += len(deltas)
