"""``run_delivery`` (what the demo calls): both destinations side by side for a bounded
time, Avro deltas in the Confluent wire format, undecodable records dead-lettered."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer

from streamsync.config import load_config
from streamsync.deltas.codec import encode_avro
from streamsync.destinations.deliver import run_delivery
from streamsync.dev.standins import StandInAdmin, StandInServer
from streamsync.ingest.avro import confluent_frame
from tests.destinations.conftest import BRAZE_KEY, MOE_APP, MOE_KEY, delta
from tests.destinations.helpers import read_topic, write_config

pytestmark = pytest.mark.kafka


def test_run_delivery_reports_counts_per_destination(
    tmp_path: Path, kafka_bootstrap_servers: str, new_topic: Callable[..., str],
    standins: StandInServer,
) -> None:  # fmt: skip
    topic, dead = new_topic("deltas-avro"), new_topic("dlq")
    producer = Producer({"bootstrap.servers": kafka_bootstrap_servers})
    deltas = [delta(f"c{i}", "ACT__A", "enter") for i in range(10)]
    deltas.append(delta("c0", "ACT__A", "exit", seq=2))
    for d in deltas:
        producer.produce(
            topic, key=d.customer_id.encode(), value=confluent_frame(1, encode_avro(d))
        )
    producer.produce(topic, key=b"c99", value=b"not avro at all")
    producer.flush(10)
    path = write_config(
        tmp_path / "c.yaml", kafka_bootstrap_servers, topic,
        {
            "braze": {"kind": "braze", "base_url": standins.urls["braze"],
                      "credentials": {"env": "K1"}, "dead_letter_topic": dead,
                      "rate_limit": {"limit": 50, "window_s": 1.0}},
            "moe": {"kind": "moengage", "base_url": standins.urls["moengage"], "app_id": MOE_APP,
                    "credentials": {"env": "K2"}, "dead_letter_topic": dead,
                    "rate_limit": {"limit": 2000, "window_s": 2.0}},
        },
    )  # fmt: skip
    text = path.read_text().replace("topic: " + topic, f"topic: {topic}\n  format: avro")
    path.write_text(text)
    config = load_config(path, env={})
    assert config.deltas.format == "avro"
    results = run_delivery(
        config, duration_s=60, idle_timeout_s=3, env={"K1": BRAZE_KEY, "K2": MOE_KEY}
    )
    for name in ("braze", "moe"):
        result = results[name]
        assert result.error is None
        assert result.consumed == 12 and result.malformed == 1
        # c0's enter and exit are either collapsed into one change or both delivered
        assert result.stats.delivered_total + result.stats.collapsed == 11
    moe_users = StandInAdmin(standins.urls["moengage"]).profiles()["users"]
    assert moe_users["c0"]["streamsync_audiences"] == []
    assert moe_users["c5"]["streamsync_audiences"] == ["ACT__A"]
    letters = read_topic(kafka_bootstrap_servers, dead, timeout_s=2)
    assert [dict(m.headers())["streamsync.error.reason"] for m in letters] == [
        b"malformed_delta",
        b"malformed_delta",
    ]
