"""Creating topics for a test, the one way: created, then waited for until the metadata
shows each with its partition count (a topic's creation returns before every part of the
cluster knows it; a client that asks at once may be told it does not exist)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic


def create_topics(admin: AdminClient, topics: Sequence[NewTopic], timeout_s: float = 30) -> None:
    """Create ``topics`` (an existing one is fine) and return once the metadata shows
    every one of them with its partitions."""
    for future in admin.create_topics(list(topics)).values():
        try:
            future.result(timeout_s)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if not (
                isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS
            ):
                raise
    wanted = {t.topic: t.num_partitions for t in topics}
    deadline = time.monotonic() + timeout_s
    while True:
        metadata = admin.list_topics(timeout=10)
        shown = {
            name: len(t.partitions)
            for name, t in metadata.topics.items()
            if name in wanted and t.error is None
        }
        if all(shown.get(name) == count for name, count in wanted.items()):
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"topics not in the metadata after {timeout_s}s: {wanted}")
        time.sleep(0.05)


def create_topic(admin: AdminClient, topic: NewTopic) -> str:
    create_topics(admin, [topic])
    return str(topic.topic)
