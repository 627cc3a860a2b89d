"""``run_delivery`` (what the demo calls): both destinations side by side for a bounded
time, Avro deltas in the Confluent wire format, undecodable records dead-lettered."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer

from streamsync.config import load_config
from streamsync.deltas.codec import encode_avro
from streamsync.destinations.deliver import DeliverLoop, run_delivery
from streamsync.dev.standins import StandInAdmin, StandInServer
from streamsync.dev.standins.compare import braze_members, expected_members
from streamsync.ingest.avro import confluent_frame
from tests.destinations.conftest import BRAZE_KEY, MOE_APP, MOE_KEY, delta
from tests.destinations.helpers import (
    produce_deltas,
    read_topic,
    synthetic_deltas,
    uncommitted_records,
    write_config,
)

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
                      "group_id": f"rd-braze-{uuid.uuid4().hex[:8]}",
                      "rate_limit": {"limit": 50, "window_s": 1.0}},
            "moe": {"kind": "moengage", "base_url": standins.urls["moengage"], "app_id": MOE_APP,
                    "credentials": {"env": "K2"}, "dead_letter_topic": dead,
                    "group_id": f"rd-moe-{uuid.uuid4().hex[:8]}",
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
        # c0's enter and exit are either both delivered, or collapsed into an exit of a
        # value never acknowledged, which is not sent
        stats = result.stats
        assert stats.delivered_total + stats.collapsed == 11 - stats.unchanged
        assert stats.unchanged == stats.collapsed
    moe_users = StandInAdmin(standins.urls["moengage"]).profiles()["users"]
    assert moe_users.get("c0", {}).get("streamsync_audiences", []) == []
    assert moe_users["c5"]["streamsync_audiences"] == ["ACT__A"]
    letters = read_topic(kafka_bootstrap_servers, dead, timeout_s=2)
    assert [dict(m.headers())["streamsync.error.reason"] for m in letters] == [
        b"malformed_delta",
        b"malformed_delta",
    ]


def test_control_file_pauses_an_audience_while_running(
    tmp_path: Path, kafka_bootstrap_servers: str, new_topic: Callable[..., str],
    standins: StandInServer,
) -> None:  # fmt: skip
    topic = new_topic("deltas")
    group = f"control-{uuid.uuid4().hex[:8]}"
    control = tmp_path / "control.yaml"
    control.write_text("paused_audiences: [ACT__B]\n")
    path = write_config(
        tmp_path / "c.yaml", kafka_bootstrap_servers, topic,
        {"braze": {"kind": "braze", "base_url": standins.urls["braze"],
                   "credentials": {"env": "K1"}, "control_file": str(control),
                   "group_id": group, "rate_limit": {"limit": 50, "window_s": 1.0}}},
    )  # fmt: skip
    loop = DeliverLoop(load_config(path, env={}), "braze", env={"K1": BRAZE_KEY})
    thread = threading.Thread(target=loop.run, kwargs={"drain_timeout_s": 2})
    thread.start()
    admin = StandInAdmin(standins.urls["braze"])

    def members() -> dict[str, list[str]]:
        users = admin.profiles()["users"]
        return {k: v.get("streamsync_audiences", []) for k, v in users.items()}

    try:
        produce_deltas(
            kafka_bootstrap_servers, topic,
            [delta("c1", "ACT__A", "enter"), delta("c1", "ACT__B", "enter"),
             delta("c2", "ACT__A", "enter")],
        )  # fmt: skip
        _wait(lambda: len(members()) == 2, "the unpaused audience")
        time.sleep(1.5)  # several pumps and commits while ACT__B is held
        assert members() == {"external_id:c1": ["ACT__A"], "external_id:c2": ["ACT__A"]}
        assert uncommitted_records(kafka_bootstrap_servers, group, topic, 1) >= 2
        control.write_text("paused_audiences: []\n")
        _wait(lambda: members()["external_id:c1"] == ["ACT__A", "ACT__B"], "resume to drain")
    finally:
        loop.stop()
        thread.join(30)
    assert uncommitted_records(kafka_bootstrap_servers, group, topic, 1) == 0


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_two_replicas_share_the_partitions_through_rebalances(
    tmp_path: Path, kafka_bootstrap_servers: str, new_topic: Callable[..., str],
    standins: StandInServer,
) -> None:  # fmt: skip
    deltas = synthetic_deltas(customers=150, events=4000, seed=3)
    expected = expected_members(deltas)
    topic = new_topic("deltas", partitions=4)
    group = f"replicas-{uuid.uuid4().hex[:8]}"
    path = write_config(
        tmp_path / "c.yaml", kafka_bootstrap_servers, topic,
        {"braze": {"kind": "braze", "base_url": standins.urls["braze"],
                   "credentials": {"env": "K1"}, "group_id": group,
                   "batching": {"linger_ms": 20}, "max_objects_per_request": 10,
                   "rate_limit": {"limit": 25, "window_s": 1.0}}},  # two replicas: 50/s
    )  # fmt: skip
    config = load_config(path, env={})
    loops = [DeliverLoop(config, "braze", env={"K1": BRAZE_KEY}) for _ in range(2)]
    threads = [threading.Thread(target=loop.run, kwargs={"drain_timeout_s": 2}) for loop in loops]
    admin = StandInAdmin(standins.urls["braze"])

    def members() -> dict[str, set[str]]:
        return braze_members(admin.profiles())

    half = len(deltas) // 2
    # so the rebalance lands mid-delivery (the net changes of 4,000 deltas take ~20 requests)
    admin.faults(slow={"count": 10, "ms": 150})
    try:
        threads[0].start()
        produce_deltas(kafka_bootstrap_servers, topic, deltas[:half], per_transaction=100)
        _wait(lambda: len(members()) > 0, "the first replica")
        threads[1].start()  # joins: the group rebalances
        _wait(lambda: bool(loops[1].partitions) and len(loops[0].partitions) < 4, "rebalance")
        produce_deltas(kafka_bootstrap_servers, topic, deltas[half:], per_transaction=100)
        _wait(lambda: members() == expected, "profiles to match replay", timeout_s=60)
    finally:
        for loop in loops:
            loop.stop()
        for thread in threads:
            thread.join(30)
    assert all(loop.sink is not None and loop.sink.stats.requests > 0 for loop in loops)
    # Every request up to the tenth was slowed (how many requests the net changes take
    # depends on how much nets out in a buffer, so it may be fewer than ten in all).
    counters = admin.report()["counters"]
    assert counters["slowed"] == min(10, counters["requests"])
    assert admin.report()["violations"] == []
    assert uncommitted_records(kafka_bootstrap_servers, group, topic, 4) == 0


def test_deliver_to_standins_reports_against_replay(
    tmp_path: Path, kafka_bootstrap_servers: str, new_topic: Callable[..., str]
) -> None:
    from streamsync.dev.standins.session import deliver_to_standins

    deltas = synthetic_deltas(customers=60, events=1500, seed=9)
    topic = new_topic("deltas", partitions=2)
    produce_deltas(kafka_bootstrap_servers, topic, deltas)
    config = load_config(write_config(tmp_path / "c.yaml", kafka_bootstrap_servers, topic, {}))
    report = deliver_to_standins(config, duration_s=60, idle_timeout_s=2, replayed=deltas)
    for name in ("braze", "moengage"):
        assert report[name].result.error is None
        assert report[name].differences == [] and report[name].violations == []
        assert report[name].members == len(expected_members(deltas))
