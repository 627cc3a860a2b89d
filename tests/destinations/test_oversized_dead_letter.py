"""A malformed record of about 1 MB on the deltas topic: its dead letter is cut to fit
the dead-letter topic, with the original's size and SHA-256 beside its position, and
delivery commits past it; the dead letter was too large before, and deliver failed on
it at every start."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer

from streamsync.config import load_config
from streamsync.dead_letter import (
    DEFAULT_MAX_MESSAGE_BYTES,
    OFFSET_HEADER,
    PARTITION_HEADER,
    REASON_HEADER,
    SHA256_HEADER,
    TOPIC_HEADER,
    TRUNCATED_HEADER,
)
from streamsync.deltas.codec import encode_json
from streamsync.destinations.deliver import run_delivery
from streamsync.dev.standins import StandInServer
from tests.destinations.conftest import BRAZE_KEY, delta
from tests.destinations.helpers import read_topic, uncommitted_records, write_config

pytestmark = pytest.mark.kafka


def test_an_oversized_malformed_delta_is_dead_lettered_cut_and_committed(
    tmp_path: Path, kafka_bootstrap_servers: str, new_topic: Callable[..., str],
    standins: StandInServer,
) -> None:  # fmt: skip
    topic, dead = new_topic("deltas"), new_topic("dlq")
    # Just under the topic's max.message.bytes: with the headers its dead letter is not.
    malformed = b"{" + os.urandom(DEFAULT_MAX_MESSAGE_BYTES - 600)
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap_servers, "message.max.bytes": 2_000_000}
    )
    producer.produce(topic, key=b"c1", value=malformed)
    after = delta("c2", "ACT__A", "enter")
    producer.produce(topic, key=b"c2", value=encode_json(after))
    assert producer.flush(30) == 0
    group = f"big-{uuid.uuid4().hex[:8]}"
    path = write_config(
        tmp_path / "c.yaml", kafka_bootstrap_servers, topic,
        {"braze": {"kind": "braze", "base_url": standins.urls["braze"],
                   "credentials": {"env": "K1"}, "dead_letter_topic": dead,
                   "group_id": group, "rate_limit": {"limit": 50, "window_s": 1.0}}},
    )  # fmt: skip
    config = load_config(path, env={})
    result = run_delivery(config, duration_s=60, idle_timeout_s=3, env={"K1": BRAZE_KEY})["braze"]
    assert result.error is None
    assert result.consumed == 2 and result.malformed == 1
    assert uncommitted_records(kafka_bootstrap_servers, group, topic, 1) == 0
    [letter] = read_topic(kafka_bootstrap_servers, dead)
    headers = dict(letter.headers())
    assert headers[REASON_HEADER] == b"malformed_delta"
    assert headers[TRUNCATED_HEADER] == str(len(malformed)).encode()
    assert headers[SHA256_HEADER] == hashlib.sha256(malformed).hexdigest().encode()
    assert (headers[TOPIC_HEADER], headers[PARTITION_HEADER], headers[OFFSET_HEADER]) == (
        topic.encode(),
        b"0",
        b"0",
    )
    value = letter.value()
    assert 0 < len(value) < DEFAULT_MAX_MESSAGE_BYTES and malformed.startswith(value)
