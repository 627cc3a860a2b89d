"""Where each consumed message goes: a task, the re-keying stage, nowhere, or the
dead-letter topic.

:meth:`Router.route` is the hot loop of the service (every record passes through it
once), so it stays plain: attribute lookups hoisted out of the loop, no allocation per
record beyond the record's own source position. For that reason it loops over a task
input's decode outcomes itself rather than through
:meth:`~streamsync.ingest.outcomes.Outcomes.dispatch` (which would take a callback built
per record); dead letters and their counts still go through the same
:meth:`~streamsync.ingest.outcomes.Outcomes.reject`, and the re-keying stage uses
:meth:`~streamsync.ingest.outcomes.Outcomes.dispatch` as the ingest loop does. Each
outcome has one place:

* an error message: end of a partition (the task, or the re-keying stage, learns it is
  caught up), a fatal error (:class:`~streamsync.kafka.health.KafkaUnavailable`), or
  anything else, logged and skipped - also one that names no partition, which a
  consumer returns while a broker restarts;
* a record of a re-keyed topic: decoded and produced, keyed by customer, to its
  repartition topic (see :mod:`streamsync.runtime.repartition`);
* with identity resolved live (:mod:`.identity_stage`): each event of an input is its
  customer's own record, a record or link of another id (produced to the identity
  topic, keyed by that id), or both; a record of the identity topic goes to its task's
  identity table, one of the forward topic to its task's engine;
* a record of a partition this process no longer holds (revoked within this very
  batch): skipped;
* a record of a task input: decoded and handed to its task; the deltas the task emits
  are produced at once;
* a dead letter (:meth:`~streamsync.ingest.outcomes.Outcomes.reject`, counted per
  reason): a record the decoder refused, a repartition record not written by the
  re-keying stage, or a record the engine raised on before (:meth:`Router.poisoned`).

Consumed offsets are recorded in ``positions`` (committed with the transaction). After
each batch the task inputs are placed (:meth:`Task.place`) at their positions and the
end offsets of the consumer's last fetches (``end_offset``): whether a partition has
more to give is decided by offsets only (see :mod:`.task`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from types import TracebackType

from confluent_kafka import KafkaError, Message

from streamsync.dead_letter import ENGINE_ERROR
from streamsync.deltas.record import MembershipDelta
from streamsync.identity.table import PendingLink
from streamsync.ingest.decoder import Decoder, record_time_ms
from streamsync.ingest.errors import DecodeError, DecodeReason
from streamsync.ingest.event import Event, SourcePosition, progress_ms
from streamsync.ingest.outcomes import Outcomes, TopicStats
from streamsync.kafka.health import KafkaUnavailable
from streamsync.runtime.collector import Collector
from streamsync.runtime.identity_stage import IdentityStage, message_headers
from streamsync.runtime.repartition import (
    EVENT_TAG,
    FORWARD_TAG,
    LINK_TAG,
    MARK_TAG,
    Repartitioner,
    decode_event,
    decode_forward,
    decode_link,
    parse_source_key,
)
from streamsync.runtime.stats import EvaluateStats
from streamsync.runtime.task import UNKNOWN, Task
from streamsync.runtime.telemetry import EvaluateTelemetry

log = logging.getLogger(__name__)

__all__ = ["ENGINE_ERROR", "MALFORMED", "Router"]

#: Dead-letter reason for a repartition record that is not the re-keying stage's.
MALFORMED = DecodeReason.MALFORMED_JSON.value

Position = tuple[str, int]


class Router:
    """Routes consumed messages; see the module docstring."""

    def __init__(
        self,
        *,
        decoders: Mapping[str, Decoder],
        rekeyed: Mapping[str, str],
        tasks: Mapping[int, Task],
        collector: Collector,
        stats: EvaluateStats,
        telemetry: EvaluateTelemetry,
        positions: dict[Position, int],
        repartitioner: Repartitioner | None,
        end_offset: Callable[[str, int], int],
        query_end: Callable[[str, int], int],
        lateness_ms: int,
        identity: IdentityStage | None = None,
    ) -> None:
        self.decoders = dict(decoders)
        #: how far past its receipt a record's time may move a clock (``progress_ms``)
        self.lateness_ms = lateness_ms
        #: raw topic -> repartition topic
        self.rekeyed = dict(rekeyed)
        #: the tasks (the task manager's, changing with rebalances)
        self.tasks = tasks
        self.collector = collector
        self.stats = stats
        self.telemetry = telemetry
        #: (topic, partition) -> the offset after the last consumed record
        self.positions = positions
        self.repartitioner = repartitioner
        #: (topic, partition) -> the end offset of the consumer's last fetch (-1: none)
        self.end_offset = end_offset
        #: (topic, partition) -> the end offset asked of the broker now (-1: no answer)
        self.query_end = query_end
        #: (topic, partition, offset) -> why: records the engine raised on
        self.poison: dict[tuple[str, int, int], str] = {}
        #: decode outcomes to where they belong; dead letters to the collector
        self.outcomes = Outcomes(collector.dead_letter)
        self._reject = self.outcomes.reject
        #: identity resolution (``identity.live``): where identity records go
        self.identity = identity
        self._identity_topic = "" if identity is None else identity.identity_topic
        self._forward_topic = "" if identity is None else identity.forward_topic

    def route(self, messages: list[Message]) -> int:
        """Decode and evaluate a batch; return how many records it held."""
        handled = 0
        topics_stats = self.stats.topics
        tasks = self.tasks
        received = self.telemetry.received
        emit = self.collector.deltas
        positions = self.positions
        rekeyed = self.rekeyed
        decoders = self.decoders
        poison = self.poison
        reject = self._reject
        for message in messages:
            error = message.error()
            if error is not None:
                self._error(message, error)
                continue
            topic = message.topic()
            partition = message.partition()
            assert topic is not None and partition is not None  # a record has both
            if rekeyed and topic in rekeyed:
                handled += 1
                self._rekey(message, topic, partition)
                continue
            task = tasks.get(partition)
            if task is None:  # revoked in this very batch
                continue
            handled += 1
            offset = message.offset()
            assert offset is not None
            positions[(topic, partition)] = offset + 1
            task.caught_up[topic] = False
            value = message.value()
            source = SourcePosition(topic, partition, offset)
            topic_stats = topics_stats[topic]
            why = poison.get((topic, partition, offset)) if poison else None
            if why is not None:
                reject(message, source, ENGINE_ERROR, why, None, topic_stats)
                continue
            if task.merged and topic in task.merged:  # a repartition topic
                try:
                    if value and value[0] == MARK_TAG:
                        task.mark(topic, value)
                        continue
                    if topic == self._identity_topic or topic == self._forward_topic:
                        deltas = self._identity_record(task, topic, value or b"", source)
                        if deltas:
                            emit(deltas, partition)
                        continue
                    event = decode_event(value or b"", source)
                except (ValueError, TypeError):  # not written by the re-keying stage
                    detail = "not a record of the re-keying stage"
                    reject(message, source, MALFORMED, detail, None, topic_stats)
                    continue
                received(message, event)
                deltas = task.process(event)
                if deltas:
                    emit(deltas, partition)
                continue
            record_ms = record_time_ms(message)
            if self.identity is not None:
                self._keyed_with_identity(message, task, source, topic_stats)
                continue
            for outcome in decoders[topic].decode_all(value, message.key(), source, record_ms):
                if isinstance(outcome, Event):
                    topic_stats.decoded += 1
                    received(message, outcome)
                    deltas = task.process(outcome)
                    if deltas:
                        emit(deltas, partition)
                elif isinstance(outcome, DecodeError):
                    reason = outcome.reason.value
                    index = outcome.index
                    reject(message, source, reason, outcome.detail, index, topic_stats)
                else:
                    topic_stats.skipped[outcome.reason] += 1
        if handled:
            self._place()
        return handled

    def _identity_record(
        self, task: Task, topic: str, value: bytes, source: SourcePosition
    ) -> list[MembershipDelta]:
        """A record of the identity topic (a link or an id's record, for the task's
        identity table) or of the forward topic (a record a link attributes to one of
        the task's customers). Raises ``ValueError`` for anything else."""
        tag = value[0] if value else 0
        if topic == self._identity_topic:
            if tag == LINK_TAG:
                xid, at, person, id_kind, rid, _ = decode_link(value)
                task.table.link(PendingLink(xid, at, person, id_kind, rid))
                return []
            if tag == EVENT_TAG:
                task.table.record(decode_event(value, source))
                return []
        elif tag == FORWARD_TAG:
            event, from_ms = decode_forward(value, source)
            return task.process_forwarded(event, from_ms)
        raise ValueError("not an identity record")

    def _keyed_with_identity(
        self, message: Message, task: Task, source: SourcePosition, topic_stats: TopicStats
    ) -> None:
        """A record of a keyed input when identity is resolved: each event is its
        customer's own record, an identity record, or both (see
        :mod:`.identity_stage`); the partition's progress is reported to the identity
        topic."""
        identity = self.identity
        assert identity is not None
        emit = self.collector.deltas
        partition = source.partition
        newest: int | None = None
        lateness = self.lateness_ms

        def own(event: Event) -> None:
            deltas = task.process(event)
            if deltas:
                emit(deltas, partition)

        def evaluated(event: Event) -> None:
            nonlocal newest
            self.telemetry.received(message, event)
            identity.route(event, own, self.collector.send, message_headers(message))
            progress = progress_ms(event, lateness)
            if newest is None or progress > newest:
                newest = progress

        decoded = self.decoders[source.topic].decode_all(
            message.value(), message.key(), source, record_time_ms(message)
        )
        self.outcomes.dispatch(decoded, message, source, topic_stats, evaluated)
        identity.sources.seen(source.topic, partition, newest)

    def _place(self) -> None:
        """Place the task inputs at their positions and end offsets (see :mod:`.task`).

        Live (the wall clock on): those read since the last commit and not caught up
        (have they reached the end now?) and those caught up (has the end moved on?),
        at the end offset the consumer's last fetch of them reported: no request.

        Without the wall clock, history is replayed exactly: for each task that read
        records since the last commit, every input at its known end that has never
        given a record, and every raw partition behind a repartition input reported at
        its end without a record, is asked of the broker (``query_end``, once per
        partition per call). A fetch reports a partition's end only with records of
        it, so a known end may be older than the records just read: records produced
        to that partition together with them must not find the clock already past
        them. (An input that has given records, keyed or raw, holds the clock at its
        newest anyway: see :meth:`Task.watermark`.)"""
        end_offset = self.end_offset
        positions = self.positions
        asked: dict[Position, int] = {}
        for number, task in self.tasks.items():
            if task.wall_clock:
                caught_up = task.caught_up
                for topic in task.topics:
                    if caught_up[topic]:
                        end = end_offset(topic, number)
                        if end > task.ends[topic]:
                            task.place(topic, task.positions[topic], end)
                        continue
                    position = positions.get((topic, number))
                    if position is not None:
                        task.place(topic, position, end_offset(topic, number))
                continue
            if not any((topic, number) in positions for topic in task.topics):
                continue  # nothing read: the ends confirmed before still stand
            for topic in task.topics:
                position = positions.get((topic, number), task.positions[topic])
                if position < 0:
                    continue  # not placed yet
                end = end_offset(topic, number)
                if position >= max(end, task.ends[topic]) and (
                    task.newest[topic] == UNKNOWN or topic in task.merged
                ):
                    end = self._ask(asked, topic, number)
                task.place(topic, position, end)
                merged = task.merged.get(topic)
                if merged is not None:
                    empty = merged.empty_at_end()
                    ends = {key: self._ask(asked, *parse_source_key(key)) for key, _ in empty}
                    task.confirm_sources(topic, ends)

    def _ask(self, asked: dict[Position, int], topic: str, partition: int) -> int:
        end = asked.get((topic, partition))
        if end is None:
            end = asked[(topic, partition)] = self.query_end(topic, partition)
        return end

    def _error(self, message: Message, error: KafkaError) -> None:
        """An error message: end of a partition, fatal, or logged and skipped."""
        topic = message.topic()
        partition = message.partition()
        if (
            error.code() == KafkaError._PARTITION_EOF
            and topic is not None
            and partition is not None
        ):
            offset = message.offset()
            if offset is None or offset < 0:
                offset = self.positions.get((topic, partition), 0)
            identity = self.identity
            if identity is not None and topic in identity.sources.targets:
                identity.sources.at_end(topic, partition, offset)
            if topic in self.rekeyed:
                if self.repartitioner is not None:
                    self.repartitioner.at_end(topic, partition, offset)
                return
            task = self.tasks.get(partition)
            if task is not None:
                task.at_end(topic, offset)
            return
        if error.fatal():
            raise KafkaUnavailable(f"fatal consumer error: {error}")
        if topic is None or partition is None:  # the client's own (a broker restarting)
            log.warning("consumer error: %s", error)
        else:
            log.warning("consumer error on %s[%s]: %s", topic, partition, error)

    def _rekey(self, message: Message, topic: str, partition: int) -> None:
        """Decode a record of a topic not keyed by customer and produce its events to
        the repartition topic, keyed by customer (see :mod:`.repartition`)."""
        stage = self.repartitioner
        assert stage is not None  # there is a stage whenever a topic is re-keyed
        offset = message.offset()
        assert offset is not None
        self.positions[(topic, partition)] = offset + 1
        source = SourcePosition(topic, partition, offset)
        topic_stats = self.stats.topics[topic]
        target = self.rekeyed[topic]
        raw = message.headers()  # kept, as Kafka Streams does (trace context)
        headers = list(raw.items()) if isinstance(raw, dict) else raw
        send = self.collector.send
        newest: int | None = None
        lateness = self.lateness_ms

        def own(event: Event) -> None:
            key, number, value = stage.route(event)
            send(target, key, value, partition=number, headers=headers)

        identity = self.identity

        def rekeyed(event: Event) -> None:
            nonlocal newest
            if identity is None:
                own(event)
            else:
                identity.route(event, own, send, headers)
            progress = progress_ms(event, lateness)
            if newest is None or progress > newest:
                newest = progress

        decoded = self.decoders[topic].decode_all(
            message.value(), message.key(), source, record_time_ms(message)
        )
        self.outcomes.dispatch(decoded, message, source, topic_stats, rekeyed)
        stage.seen(topic, partition, newest)
        if identity is not None:
            identity.sources.seen(topic, partition, newest)

    def poisoned(self, exc: Exception) -> SourcePosition:
        """The engine raised ``exc``: remember the record it was applying, to be
        dead-lettered when it is read again (after the rewind the caller does). The
        error is not retried: the same record raises every time. Raises ``exc`` when
        no record can be blamed."""
        source = _poison_position(exc.__traceback__)
        if source is None:
            raise exc
        log.error(
            "the engine raised %s on %s[%s]@%s; that record will be dead-lettered",
            type(exc).__name__,
            source.topic,
            source.partition,
            source.offset,
        )
        self.stats.engine_errors += 1
        self.poison[(source.topic, source.partition, source.offset)] = (
            f"the audience engine raised {type(exc).__name__} applying this record"
        )
        return source


def _poison_position(tb: TracebackType | None) -> SourcePosition | None:
    """The source of the record the engine was applying when it raised: the innermost
    frame holding an ``Event`` with a source (the engine releases records from its
    buffer long after they were handed in, so the caller cannot know which one)."""
    found: SourcePosition | None = None
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if isinstance(value, Event) and value.source is not None:
                found = value.source
        tb = tb.tb_next
    return found
