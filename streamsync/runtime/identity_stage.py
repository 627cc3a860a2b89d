"""Identity resolution in the evaluate service (``identity.live``), built from the
re-keying stage's parts (:mod:`streamsync.runtime.repartition`) as Kafka Streams builds
a stream-table join from a repartition topic and a table keyed by the join key.

Two internal topics, with one partition per task:

* ``<group_id>.identity``, keyed by the id a record links or belongs to: every record
  of an anonymous id (an email, with email links on) and every link (the
  ``anonymousId`` beside a ``userId``, an alias's ``previousId``, an identify's email)
  is produced there, by whoever reads it (a task from a keyed input, the re-keying
  stage from a raw topic), in the cycle's transaction. Task ``p`` reads partition ``p``
  into its :class:`~streamsync.identity.table.IdentityTable`. The record that carries a
  link is also its person's own record, evaluated as any other.
* ``<group_id>.identity.forward``, keyed by person: what a link attributes to a person
  (the id's held records at the link, its later records as they are decided), with the
  instant it counts from. The person's task applies it through the engine
  (:meth:`~streamsync.audiences.engine.Engine.process_attributed`), as ``replay`` does.

Time: both are merged inputs with progress marks, as a repartition topic is. Every
partition that can write the identity topic (each partition of every input topic)
reports its progress there (:attr:`IdentityStage.sources`), so an identity task's clock
passes an instant only when every link and record before it (within the allowed
lateness) has arrived; it decides them in event-time order and reports its own clock to
the forward topic (:attr:`IdentityStage.decided`), after what it forwarded. A task's
clock for its customers is held by the forward topic's marks, so it passes a link's
instant only once everything that link attributes before that instant has arrived: a
forwarded record is applied at ``max(its time, the link's)``, exactly as in ``replay``.
An identity task's clock never waits for a person's (it follows what was read, not what
was evaluated), so there is no cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from confluent_kafka import Message

from streamsync.identity.config import IdentityConfig
from streamsync.identity.table import roles
from streamsync.ingest.event import Event
from streamsync.runtime.repartition import (
    Partitioner,
    Repartitioner,
    encode_event,
    encode_forward,
    encode_link,
    partition_for,
    source_key,
)
from streamsync.runtime.task import Task

Send = Callable[..., None]


class IdentityStage:
    """Where identity records go, and the progress marks of the two identity topics;
    see the module docstring."""

    def __init__(
        self,
        config: IdentityConfig,
        *,
        identity_topic: str,
        forward_topic: str,
        partitions: int,
        input_partitions: Mapping[str, int],
        partitioner: Partitioner,
    ) -> None:
        self.config = config
        self.identity_topic = identity_topic
        self.forward_topic = forward_topic
        self.partitions = partitions
        self.partitioner: Partitioner = partitioner
        #: progress of every input partition, reported to the identity topic
        self.sources = Repartitioner(
            dict.fromkeys(input_partitions, identity_topic),
            partitions,
            input_partitions,
            partitioner,
        )
        #: progress of every identity task, reported to the forward topic
        self.decided = Repartitioner(
            {identity_topic: forward_topic}, partitions, {identity_topic: partitions}, partitioner
        )

    def merged(self) -> dict[str, frozenset[str]]:
        """The sources of the two merged inputs (see :class:`MergedInput`)."""
        inputs = frozenset(
            key for topic in self.sources.raw_partitions for key in self.sources.sources(topic)
        )
        tasks = frozenset(source_key(self.identity_topic, p) for p in range(self.partitions))
        return {self.identity_topic: inputs, self.forward_topic: tasks}

    def route(
        self,
        event: Event,
        own: Callable[[Event], None],
        send: Send,
        headers: list[tuple[str, bytes | str | None]] | None = None,
    ) -> None:
        """``event`` as identity reads it: given to ``own`` when it is its customer's
        own record; produced to the identity topic, keyed by each id it links or
        belongs to."""
        part = roles(event, self.config)
        if part.own:
            own(event)
        topic, partitions, partitioner = self.identity_topic, self.partitions, self.partitioner
        for xid in part.links:
            key = xid.encode()
            value = encode_link(xid, event.timestamp_ms, event)
            send(topic, key, value, partition=partition_for(key, partitions, partitioner))
        for xid in part.records:
            key = xid.encode()
            number = partition_for(key, partitions, partitioner)
            send(topic, key, encode_event(event), partition=number, headers=headers)

    def decide(self, task: Task, now_ms: int, send: Send) -> None:
        """Move ``task``'s identity table to its clock, produce what links attribute,
        keyed by person, and note the table's progress for the forward topic's marks."""
        forwards = task.decide_identity(now_ms)
        topic, partitions, partitioner = self.forward_topic, self.partitions, self.partitioner
        for forward in forwards:
            key = forward.event.customer_id.encode()
            number = partition_for(key, partitions, partitioner)
            send(topic, key, encode_forward(forward.event, forward.from_ms), partition=number)
        newest, done, position = task.identity_progress()
        stage = self.decided
        # Live, a task that waits for nothing holds no clock back (a merged source at
        # its end), so its newest need not move on: no mark per cycle while idle.
        # Without the wall clock a source at its end still counts with its newest
        # (see MergedInput.newest), so the table's progress is always reported; it
        # moves only with event time there.
        idle = done and task.wall_clock
        stage.seen(self.identity_topic, task.partition, None if idle else newest)
        if done:
            stage.at_end(self.identity_topic, task.partition, position)

    def marks(self) -> Iterator[tuple[str, int, bytes]]:
        yield from self.sources.marks()
        yield from self.decided.marks()

    def committed(self) -> None:
        self.sources.committed()
        self.decided.committed()

    def reset(
        self, partitions: list[tuple[str, int]] | None = None, tasks: list[int] | None = None
    ) -> None:
        """Forget the progress of input ``partitions`` and identity ``tasks`` (all when
        ``None``): read again after an abort, or by another member after a revoke."""
        if partitions is None:
            self.sources.reset()
            self.decided.reset()
            return
        self.sources.reset([tp for tp in partitions if tp[0] in self.sources.targets])
        self.decided.reset([(self.identity_topic, n) for n in tasks or ()])


def message_headers(message: Message) -> list[tuple[str, bytes | str | None]] | None:
    raw = message.headers()
    return list(raw.items()) if isinstance(raw, dict) else raw
