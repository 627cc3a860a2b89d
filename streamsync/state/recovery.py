"""Bringing a partition store up to date from its compacted changelog topic.

The store's own changelog offset says where its local copy ends; only the records after
it are read (all of them when the local copy is missing, or when its offset is outside
the changelog's current range, which means the topic was recreated or the copy belongs
elsewhere). The restore consumer reads ``read_committed``, so changes of transactions
that were aborted (a crash before a commit) are never restored.

A restore can take minutes; a stop asked for meanwhile (SIGTERM) is checked between
batches and ends it with :class:`RestoreStopped` after writing what was read, so the
next start goes on from there instead of the stop waiting for every partition.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from streamsync.errors import NeedsOperator, Unavailable
from streamsync.state.store import PartitionStore

log = logging.getLogger(__name__)

_PROGRESS_EVERY_S = 5.0


class RecoveryError(Unavailable):
    """The changelog could not be read to its end in time."""


class RestoreStopped(Exception):
    """A stop was asked for while a partition was being restored: not an error; the
    service stops cleanly (exit status 0) without opening the remaining tasks."""


class ChangelogLost(NeedsOperator):
    """The changelog no longer holds what the local copy (and the committed input
    offsets) were built on: exit status 1, never a silent start from empty state."""


#: Errors of a watermark query that pass once the partition's leadership settles (a
#: changelog created a moment ago, a broker restarting): asked again for a while.
_LEADERSHIP = frozenset(
    (
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
    )
)


def partition_range(
    consumer: Consumer, topic: str, partition: int, *, budget_s: float = 30.0
) -> tuple[int, int]:
    """``(low, high)`` watermarks of ``topic[partition]``, asked again for up to
    ``budget_s`` while the broker answers with an error that passes once leadership
    settles (the metadata shows a new topic before its leaders are known everywhere):
    for the changelog here, for every task input when a task is placed."""
    deadline = time.monotonic() + budget_s
    while True:
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=30, cached=False
            )
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if not isinstance(error, KafkaError) or error.code() not in _LEADERSHIP:
                raise
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def restore_partition(
    consumer: Consumer,
    store: PartitionStore,
    topic: str,
    partition: int,
    *,
    timeout_s: float = 300.0,
    progress: Callable[[str], None] | None = None,
    on_offsets: Callable[[int, int], None] | None = None,
    stopping: Callable[[], bool] | None = None,
) -> int:
    """Apply the changelog tail of ``topic[partition]`` to ``store``; return the number
    of changelog records read. ``consumer`` is a group-less ``read_committed`` consumer
    used only for restores. ``on_offsets(done, total)`` follows the restore in changelog
    offsets (for the restore-progress metric), from ``(0, total)`` to ``(total, total)``.
    ``stopping()`` true between batches raises :class:`RestoreStopped`, what was read so
    far written to the store with its offset."""
    say = progress or log.info
    low, high = partition_range(consumer, topic, partition)
    identity = f"{topic}[{partition}]"
    claimed = store.identity
    if claimed is not None and claimed != identity:
        say(f"{identity}: the local state copy belongs to {claimed}; discarded")
        store.clear()
    local = store.changelog_offset
    if local is not None and local >= high:
        # Written only after its transaction committed, so always below the end of the
        # changelog it came from: the changelog was deleted or recreated since, and
        # what it held (the state the committed input offsets depend on) is gone.
        raise ChangelogLost(
            f"{identity} ends at offset {high} but the local state copy includes offset "
            f"{local}: the changelog was deleted or recreated, so this group's state is "
            "lost; evaluate under a new evaluate.group_id (state is rebuilt from the "
            "input topics)"
        )
    if local is not None and local < low - 1:
        say(f"{identity}: local state (offset {local}) older than {low}..{high}; discarded")
        store.clear()
        local = None
    store.claim(identity)
    start = low if local is None else local + 1
    if start >= high:
        if on_offsets is not None:
            on_offsets(0, 0)
        return 0
    say(f"{topic}[{partition}]: restoring changelog offsets {start}..{high - 1}")
    consumer.assign([TopicPartition(topic, partition, start if start > low else OFFSET_BEGINNING)])
    read = 0
    started = last_report = time.monotonic()
    batch: dict[bytes, bytes | None] = {}
    last_offset = start - 1
    try:
        while True:
            position = consumer.position([TopicPartition(topic, partition)])[0].offset
            if on_offsets is not None:
                on_offsets(max(0, min(position, high) - start), high - start)
            if position >= high:
                break
            if stopping is not None and stopping():
                if batch:
                    store.apply(batch, last_offset)
                raise RestoreStopped(
                    f"{identity}: stopped while restoring, at offset {position} of {high}; "
                    "the next start goes on from there"
                )
            now = time.monotonic()
            if now - started > timeout_s:
                raise RecoveryError(
                    f"{topic}[{partition}]: changelog not restored within {timeout_s:.0f}s "
                    f"(at offset {position} of {high})"
                )
            if now - last_report >= _PROGRESS_EVERY_S:
                last_report = now
                say(f"{topic}[{partition}]: restored {read:,} records, offset {position}/{high}")
            for message in consumer.consume(10_000, 0.2):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise RecoveryError(f"{topic}[{partition}]: {error}")
                key = message.key()
                if key is None:
                    continue
                batch[key] = message.value()
                last_offset = message.offset() or last_offset
                read += 1
            if len(batch) >= 50_000:
                store.apply(batch, last_offset)
                batch = {}
        store.apply(batch, max(last_offset, high - 1))
    finally:
        consumer.unassign()
    say(
        f"{topic}[{partition}]: restored {read:,} changelog records in "
        f"{time.monotonic() - started:.1f}s"
    )
    return read
