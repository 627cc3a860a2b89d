"""Reading topics to their end without joining a group: what ``explain`` and the
membership table's readers share.

A :class:`TopicReader` is one assign-only, ``read_committed`` consumer (no group
membership, no commits), so a reader sees exactly what a transactional writer committed
and nothing of a transaction still open or aborted. A partition is read from its oldest
retained record to its end as of the start of the read; the end is known from the
partition-EOF event rather than from offsets, because the last offsets of a partition a
transactional producer writes are commit markers, which are never delivered.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streamsync.config import AppConfig
from streamsync.errors import UserMistake
from streamsync.kafka.config import consumer_config
from streamsync.kafka.health import QUIET_CLIENT, KafkaUnavailable, fatal_error, is_fatal

#: How long to wait for the cluster's metadata before calling it unreachable.
CONNECT_TIMEOUT_S = 10.0
#: :meth:`TopicReader.read` stopped at the deadline.
TIMEOUT = "timeout"


class ReadRefused(UserMistake):
    """The cluster does not let this configuration's credentials read a topic (exit
    status 2: another configuration or an ACL is needed, not a retry)."""


class TopicReader:
    """One assign-only consumer (no group membership, no commits), ``read_committed``;
    every read ends at ``deadline`` (``time.monotonic()``)."""

    def __init__(self, config: AppConfig, deadline: float, *, name: str = "explain") -> None:
        self.bootstrap = config.kafka.bootstrap_servers
        self.deadline = deadline
        self.fatal: KafkaError | None = None
        self.consumer = Consumer(
            consumer_config(
                self.bootstrap,
                f"streamsync-{name}-{uuid.uuid4().hex}",
                extra={
                    **config.kafka.client_config(),
                    **QUIET_CLIENT,
                    "enable.partition.eof": True,
                    "error_cb": self._on_error,
                },
            )
        )

    def _on_error(self, error: KafkaError) -> None:
        if is_fatal(error):
            self.fatal = error

    def topics(self) -> dict[str, int]:
        """Topic -> partition count; :class:`KafkaUnavailable` when the cluster does not
        answer, :class:`~streamsync.kafka.health.KafkaRefused` when it refuses us."""
        try:
            metadata = self.consumer.list_topics(timeout=self._wait())
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            detail = error.str() if isinstance(error, KafkaError) else str(exc)
            self.consumer.poll(0)  # serves the error callback (not subscribed: no records)
            if self.fatal is not None:  # the cluster refused this client
                raise fatal_error(self.fatal, self.bootstrap) from None
            raise KafkaUnavailable(f"cannot reach Kafka at {self.bootstrap}: {detail}") from None
        return {
            name: len(topic.partitions)
            for name, topic in metadata.topics.items()
            if topic.error is None
        }

    def read(
        self,
        partitions: list[tuple[str, int]],
        handle: Callable[[Message], bool],
        tick: Callable[[], None],
        *,
        last: int | None = None,
    ) -> str | None:
        """Read ``partitions`` from their oldest retained record (with ``last``: from
        that many offsets before their end) to their end as of now, calling ``handle``
        per record until it returns ``True`` (enough) and ``tick`` after every batch
        (for progress); ``TIMEOUT`` when the deadline passed first, else ``None``."""
        ends: dict[tuple[str, int], int] = {}
        starts = []
        for topic, partition in partitions:
            try:
                low, high = self.consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=self._wait(), cached=False
                )
            except KafkaException:
                return TIMEOUT
            if high > low:
                ends[(topic, partition)] = high
                start = low if last is None else max(low, high - last)
                starts.append(TopicPartition(topic, partition, start))
        if not starts:
            return None
        self.consumer.assign(starts)
        try:
            while ends:
                if time.monotonic() >= self.deadline:
                    return TIMEOUT
                if self.fatal is not None:
                    raise fatal_error(self.fatal, self.bootstrap)
                for message in self.consumer.consume(500, 0.2):
                    where = (message.topic() or "", message.partition() or 0)
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            ends.pop(where, None)
                        elif error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                            raise ReadRefused(f"not allowed to read {where[0]}: {error.str()}")
                        continue
                    if handle(message):
                        return None
                    offset = message.offset() or 0
                    if where in ends and offset >= ends[where] - 1:
                        del ends[where]
                tick()
            return None
        finally:
            self.consumer.unassign()

    def offsets(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int]]:
        """``(low, high)`` watermark offsets of each of ``partitions``: the oldest offset
        the broker still holds (0: nothing was ever deleted) and the end."""
        out: dict[tuple[str, int], tuple[int, int]] = {}
        for topic, partition in partitions:
            try:
                low, high = self.consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=self._wait(), cached=False
                )
            except KafkaException as exc:
                raise KafkaUnavailable(
                    f"cannot read the offsets of {topic}[{partition}] on {self.bootstrap}: {exc}"
                ) from None
            out[(topic, partition)] = (int(low), int(high))
        return out

    def _wait(self) -> float:
        """How long one metadata request may take: the connect timeout, or what is left
        before the deadline (at least half a second)."""
        return max(0.5, min(CONNECT_TIMEOUT_S, self.deadline - time.monotonic()))

    def close(self) -> None:
        self.consumer.close()
