"""What the group has committed and where a partition ends, asked of the broker.

Both are asked at the moments a broker is most likely to be busy or away: at an
assignment, and when a cycle is rewound after an aborted transaction (a broker restart
is the usual cause). librdkafka reports trouble there in two ways: the call raises
(``_TIMED_OUT``, ``NOT_COORDINATOR``), or it returns and marks partitions with an error
and no offset (``COORDINATOR_LOAD_IN_PROGRESS`` while a restarted coordinator reads
its offsets topic). The second looks like "nothing committed" and, taken at its word,
would send a consumer back to the start of its partitions; :func:`committed_offsets`
asks again for both until its budget runs out.
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streamsync.kafka.health import KafkaUnavailable

#: Errors a coordinator answers with while it moves or loads (retried, whatever
#: librdkafka's ``retriable()`` says of them).
_TRANSIENT = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.UNSTABLE_OFFSET_COMMIT,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError._WAIT_COORD,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
    }
)


def _transient(error: object) -> bool:
    return isinstance(error, KafkaError) and (error.retriable() or error.code() in _TRANSIENT)


def committed_offsets(
    consumer: Consumer, partitions: list[TopicPartition], budget_s: float
) -> list[TopicPartition]:
    """The group's committed offsets of ``partitions``, asked again while the broker
    answers with a transient error, raised or on a partition, for up to ``budget_s``;
    then :class:`KafkaUnavailable`. A partition in the answer without an error and
    without an offset has none committed."""
    deadline = time.monotonic() + budget_s
    while True:
        try:
            answer = list(consumer.committed(partitions, timeout=max(1.0, min(10.0, budget_s))))
        except KafkaException as exc:
            error: object = exc.args[0] if exc.args else None
            reason = str(exc)
        else:
            failed = [tp for tp in answer if tp.error is not None]
            if not failed:
                return answer
            error = failed[0].error
            reason = f"{failed[0].topic}[{failed[0].partition}]: {error}"
        if not _transient(error):
            raise KafkaUnavailable(f"cannot read the committed offsets: {reason}")
        if time.monotonic() >= deadline:
            raise KafkaUnavailable(
                f"cannot read the committed offsets for {budget_s:.0f}s: {reason}"
            )
        time.sleep(0.2)


def end_offset(consumer: Consumer, topic: str, partition: int, *, cached: bool) -> int:
    """A partition's end offset: with ``cached``, what ``consumer``'s last fetch of it
    reported (no request), else asked of the broker now; ``-1`` when there is none."""
    tp = TopicPartition(topic, partition)
    try:
        _, high = (
            consumer.get_watermark_offsets(tp, cached=True)
            if cached
            else consumer.get_watermark_offsets(tp, timeout=10)
        )
    except KafkaException:
        return -1
    return int(high) if high is not None and high >= 0 else -1
