"""Broker trouble reported by the client's error callback is one line, then one every
interval, whatever the kind: a bootstrap host that does not resolve used to log every
attempt (about 19 lines a second)."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError

from streamsync.kafka.health import ClientHealth


@pytest.mark.parametrize(
    "code", [KafkaError._RESOLVE, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN]
)
def test_repeated_broker_errors_are_reported_once_per_interval(
    code: int, caplog: pytest.LogCaptureFixture
) -> None:
    health = ClientHealth("no-such-host.invalid:9092")
    with caplog.at_level(logging.WARNING):
        for _ in range(200):
            health.on_error(KafkaError(code, "Failed to resolve 'no-such-host.invalid:9092'"))
    lines = [r for r in caplog.records if "no-such-host" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].getMessage().startswith("cannot reach Kafka at no-such-host.invalid:9092")
    assert health.outage.since is not None  # counted as an outage (broker_timeout applies)
