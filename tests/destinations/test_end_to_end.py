"""Delivery end to end on the real broker and the stand-ins, with faults.

Deltas from offline replay are produced to a topic in transactions; ``streamsync deliver``
runs as a subprocess per destination while the stand-ins inject 5xx bursts, outages,
dropped connections, slow answers and 429 storms, and the Braze process is killed with
SIGKILL midway and restarted. At the end each stand-in's profiles must hold exactly the
memberships replay says, the dead-letter topic only the deltas of the customers the
stand-in was told to refuse, and the stand-ins must have recorded no request over a
documented limit and none sent before a 429's reset.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from streamsync.dev.standins import BrazeStandIn, MoEngageStandIn, StandInAdmin, StandInServer
from streamsync.dev.standins.compare import (
    braze_members,
    differences,
    expected_members,
    moengage_members,
)
from tests.destinations.helpers import (
    produce_deltas,
    read_topic,
    synthetic_deltas,
    uncommitted_records,
    write_config,
)

pytestmark = pytest.mark.kafka

BRAZE_KEY = "e2e-braze-key"
MOE_APP, MOE_KEY = "E2EAPP", "e2e-moe-key"


@pytest.fixture
def standins() -> Iterator[StandInServer]:
    # Tighter windows than production so the limiter and the 429 path are exercised;
    # the clients are configured with the same limits, as they would be in production.
    server = StandInServer(
        {
            "braze": BrazeStandIn(BRAZE_KEY, limit=40, window_s=1.0),
            "moengage": MoEngageStandIn(MOE_APP, MOE_KEY, user_limit=1500, window_s=3.0),
        }
    )
    with server:
        yield server


def _start(config: Path, name: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "E2E_BRAZE_KEY": BRAZE_KEY, "E2E_MOE_KEY": MOE_KEY}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # the config names the broker
    return subprocess.Popen(
        [sys.executable, "-m", "streamsync", "deliver", "--config", str(config),
         "--destination", name],
        env=env, stdout=subprocess.PIPE, stderr=log.open("wb"),
    )  # fmt: skip


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_deliver_survives_outages_storms_and_sigkill(
    tmp_path: Path, kafka_bootstrap_servers: str, new_topic: Callable[..., str],
    standins: StandInServer,
) -> None:  # fmt: skip
    deltas = synthetic_deltas(customers=400, events=12000)
    assert len(deltas) > 5000
    quarter = len(deltas) // 4
    waves = [deltas[i * quarter : (i + 1) * quarter if i < 3 else None] for i in range(4)]
    topic = new_topic("deltas", partitions=3)
    dead = new_topic("deliver-dlq")
    expected = expected_members(deltas)
    customers = sorted({d.customer_id for d in deltas})
    refused = {customers[3], customers[40]}  # Braze refuses these ids per record
    fast = {"initial_backoff_s": 0.05, "max_backoff_s": 0.5, "timeout_s": 2.0}
    groups = {name: f"e2e-{name}-{uuid.uuid4().hex[:8]}" for name in ("braze", "moengage")}
    config = write_config(
        tmp_path / "config.yaml", kafka_bootstrap_servers, topic,
        {
            "braze": {
                "kind": "braze", "base_url": standins.urls["braze"],
                "credentials": {"env": "E2E_BRAZE_KEY"},
                "rate_limit": {"limit": 40, "window_s": 1.0},
                "retry": fast, "batching": {"linger_ms": 50, "max_buffered": 400},
                "dead_letter_topic": dead, "consumer": {"session.timeout.ms": 6000},
                "group_id": groups["braze"],
            },
            "moengage": {
                "kind": "moengage", "base_url": standins.urls["moengage"], "app_id": MOE_APP,
                "credentials": {"env": "E2E_MOE_KEY"}, "mode": "bulk_import",
                "rate_limit": {"limit": 1500, "window_s": 3.0},
                "retry": fast, "batching": {"linger_ms": 50, "max_buffered": 400},
                "dead_letter_topic": dead, "consumer": {"session.timeout.ms": 6000},
                "group_id": groups["moengage"],
            },
        },
    )  # fmt: skip
    braze, moe = StandInAdmin(standins.urls["braze"]), StandInAdmin(standins.urls["moengage"])
    braze.faults(reject_ids=sorted(refused), status_burst={"count": 4, "status": 503})
    produce_deltas(kafka_bootstrap_servers, topic, waves[0])

    def delivered(admin: StandInAdmin) -> int:
        return int(admin.report()["counters"].get("objects", 0))

    logs = tmp_path
    braze_proc = _start(config, "braze", logs / "braze.log")
    moe_proc = _start(config, "moengage", logs / "moengage.log")
    try:
        _wait(lambda: delivered(braze) > 0 and delivered(moe) > 0, 60, "traffic")
        braze.faults(drop_count=3)
        moe.faults(down_s=2.0, slow={"count": 3, "ms": 300})
        # More deltas while delivery runs, then kill Braze delivery mid-stream.
        before = delivered(braze)
        produce_deltas(kafka_bootstrap_servers, topic, waves[1])
        _wait(lambda: delivered(braze) > before, 60, "Braze traffic on the second wave")
        braze_proc.send_signal(signal.SIGKILL)
        braze_proc.wait(10)
        before = delivered(braze)
        produce_deltas(kafka_bootstrap_servers, topic, waves[2])
        braze_proc = _start(config, "braze", logs / "braze2.log")
        _wait(lambda: delivered(braze) > before, 60, "the restarted Braze delivery")
        braze.faults(storm_s=3.0)
        moe.faults(storm_s=3.0)
        produce_deltas(kafka_bootstrap_servers, topic, waves[3])

        want_braze = expected_members(deltas, exclude=refused)
        _wait(lambda: not differences(want_braze, braze_members(braze.profiles())),
              90, "Braze profiles to match replay")  # fmt: skip
        _wait(lambda: not differences(expected, moengage_members(moe.profiles())),
              90, "MoEngage profiles to match replay")  # fmt: skip
        _wait(
            lambda: uncommitted_records(
                kafka_bootstrap_servers, groups["braze"], topic, 3) == 0
            and uncommitted_records(
                kafka_bootstrap_servers, groups["moengage"], topic, 3) == 0,
            30, "offsets to be committed",
        )  # fmt: skip
    finally:
        for proc in (braze_proc, moe_proc):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        outputs = [proc.communicate(timeout=30)[0] for proc in (braze_proc, moe_proc)]
    assert braze_proc.returncode == 0, (logs / "braze2.log").read_text()
    assert moe_proc.returncode == 0, (logs / "moengage.log").read_text()
    summary = orjson.loads(outputs[1].splitlines()[-1])
    assert summary["destination"] == "moengage"
    assert summary["retries"] > 0 and summary["rate_limited"] > 0

    # Dead letters: exactly the refused customers' deltas, each naming why.
    letters = read_topic(kafka_bootstrap_servers, dead)
    assert letters, "the refused customers' deltas must be dead-lettered"
    for letter in letters:
        headers = dict(letter.headers())
        assert headers["streamsync.error.reason"] == b"rejected"
        assert headers["streamsync.destination"] == b"braze"
        assert headers["streamsync.http.status"] == b"201"
        assert orjson.loads(letter.value())["customer_id"] in refused
    # Every refused customer whose adds were sent is there; one whose every enter was
    # netted with its exit before sending had nothing sent, so nothing refused.
    lettered = {orjson.loads(m.value())["customer_id"] for m in letters}
    assert {c for c in refused if c in expected} <= lettered <= refused

    for admin in (braze, moe):
        report = admin.report()
        assert report["violations"] == [], report["violations"]
    counters = braze.report()["counters"]
    assert counters["server_errors"] >= 4 and counters["dropped"] == 3
    assert counters["rate_limited_storm"] >= 1
    assert moe.report()["counters"]["rate_limited_storm"] >= 1
