"""Telemetry of a running pipeline on the real broker: ``streamsync evaluate`` and one
``streamsync deliver`` per stand-in destination as subprocesses, each on its own admin
port, their ``/metrics`` scraped over HTTP and the numbers read back against what was
produced, what replay computes and what the deltas topic holds; readiness after a state
restore; a W3C trace context carried from an input record's headers to its delta's."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from opentelemetry.trace import get_current_span

from streamsync.audiences.loader import load_audiences
from streamsync.audiences.replay import replay
from streamsync.deltas.codec import decode_json
from streamsync.dev.standins import BrazeStandIn, MoEngageStandIn, StandInServer
from streamsync.ingest.jsonl import is_webhook_record, read_events
from streamsync.observability.tracing import extract_trace_context
from tests.observability.scrape import get, scrape
from tests.runtime.evaluate_support import EXAMPLE_AUDIENCES, Stream, read_committed, synthetic

pytestmark = pytest.mark.kafka

BRAZE_KEY, MOE_APP, MOE_KEY = "live-braze-key", "LIVEAPP", "live-moe-key"
HOLDOUT_AUDIENCE = "SUP__Buyers__Holdout"
HOLDOUT_FILE = f"""
audiences:
  - name: {HOLDOUT_AUDIENCE}
    version: 1
    owner: retention@example.com
    description: Ordered at least once; half held out.
    entry:
      count: {{event: Order Completed, at_least: 1, within: 1000d}}
    holdout: {{percent: 50}}
"""
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait(
    what: str,
    timeout_s: float,
    check: Callable[[], bool],
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        assert proc is None or proc.poll() is None, f"{what}: the process exited"
        time.sleep(0.3)


def _scrape(port: int) -> Samples:
    try:
        return scrape(f"http://127.0.0.1:{port}")
    except OSError:  # not listening yet
        return {}


def _sum(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def _by(samples: Samples, name: str, key: str, **labels: str) -> dict[str, float]:
    wanted = set(labels.items())
    out: dict[str, float] = {}
    for (n, ls), v in samples.items():
        if n == name and wanted <= ls:
            label = dict(ls)[key]
            out[label] = out.get(label, 0) + v
    return out


class Processes:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "LIVE_BRAZE_KEY": BRAZE_KEY, "LIVE_MOE_KEY": MOE_KEY}
        env.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # the configuration names the broker
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamsync", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(self.tmp / f"{name}.log").open("wb"),
        )
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> int:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(30)
        finally:
            self.running.remove(proc)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    for proc in procs.running:
        proc.kill()
        proc.wait(10)


def _config(stream: Stream, tmp: Path, state: str, port: int, urls: dict[str, str]) -> Path:
    path = stream.config(tmp, state, audiences=str(tmp / "audiences"))
    config: dict[str, Any] = orjson.loads(path.read_bytes())
    run = stream.run
    config["observability"] = {"admin": {"port": port}, "log_format": "text"}
    config["destinations"] = {
        "braze": {
            "kind": "braze",
            "base_url": urls["braze"],
            "credentials": {"env": "LIVE_BRAZE_KEY"},
            "group_id": f"live-braze-{run}",
            "dead_letter_topic": f"live-{run}.deliver-dlq",
            "batching": {"linger_ms": 20},
        },
        "moengage": {
            "kind": "moengage",
            "base_url": urls["moengage"],
            "app_id": MOE_APP,
            "credentials": {"env": "LIVE_MOE_KEY"},
            "mode": "bulk_import",
            "group_id": f"live-moengage-{run}",
            "dead_letter_topic": f"live-{run}.deliver-dlq",
            "batching": {"linger_ms": 20},
        },
    }
    path.write_bytes(orjson.dumps(config))
    return path


def test_evaluate_and_deliver_report_what_they_did(
    kafka_bootstrap_servers: str, tmp_path: Path, processes: Processes
) -> None:
    bootstrap = kafka_bootstrap_servers
    audiences_dir = tmp_path / "audiences"
    shutil.copytree(EXAMPLE_AUDIENCES, audiences_dir)
    (audiences_dir / "holdout.yaml").write_text(HOLDOUT_FILE)

    stream = Stream(bootstrap, partitions=2)
    records = synthetic(120, 3000, seed=3)
    stream.produce(records)
    # Three records that are not JSON (dead letters) and one carrying a trace context:
    # a first order, an enter into SUP__RecentPurchasers__7d at the record's own time.
    traced_id = str(uuid.uuid4())
    now_ms = int(time.time() * 1000)
    traced = {
        "type": "track",
        "messageId": traced_id,
        "userId": f"traced-{stream.run}",
        "event": "Order Completed",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now_ms / 1000 - 60)),
        "properties": {"order_id": "o-1", "total": 25.0},
    }
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(3):
        producer.produce(stream.pipelines, b"{not json", b"bad", partition=i % 2)
    traced_value = orjson.dumps(traced)
    producer.produce(
        stream.pipelines,
        traced_value,
        traced["userId"].encode(),
        partition=stream.partition_of(traced["userId"]),
        headers=[("traceparent", TRACEPARENT.encode()), ("other", b"kept out")],
    )
    assert producer.flush(30) == 0
    lines = [*stream.lines, traced_value]
    produced = Counter(
        stream.webhooks if is_webhook_record(r) else stream.pipelines for r in [*records, traced]
    )
    produced[stream.pipelines] += 3

    with StandInServer(
        {"braze": BrazeStandIn(BRAZE_KEY), "moengage": MoEngageStandIn(MOE_APP, MOE_KEY)}
    ) as standins:
        ports = {name: _free_port() for name in ("evaluate", "braze", "moengage")}
        configs = {
            name: _config(stream, tmp_path, f"state-{name}", port, standins.urls)
            for name, port in ports.items()
        }
        evaluate = processes.start("evaluate", "evaluate", "--config", str(configs["evaluate"]))
        for name in ("braze", "moengage"):
            processes.start(name, "deliver", "--config", str(configs[name]), "--destination", name)

        # Ready once its partitions' state is restored (a fresh group: nothing to read).
        evaluate_url = f"http://127.0.0.1:{ports['evaluate']}"
        _wait("evaluate ready", 45, lambda: _status(f"{evaluate_url}/readyz") == 200, evaluate)
        assert _status(f"{evaluate_url}/healthz") == 200

        # Every record counted once committed, by topic; the dead letters by reason.
        def ingested() -> dict[str, float]:
            return _by(_scrape(ports["evaluate"]), "streamsync_records_ingested_total", "topic")

        _wait("every record counted", 45, lambda: ingested() == dict(produced))
        audiences = load_audiences(audiences_dir)
        expected = list(replay(audiences, read_events(lines, "test"), until_ms=now_ms))
        enters = Counter(d.audience for d in expected if d.op == "enter")
        exits = Counter(d.audience for d in expected if d.op == "exit")
        assert enters[HOLDOUT_AUDIENCE] > 10 and enters["SUP__RecentPurchasers__7d"] > 10

        def changes(op: str) -> dict[str, float]:
            s = _scrape(ports["evaluate"])
            return _by(s, "streamsync_audience_changes_total", "audience", op=op)

        want_exits = {a: n for a, n in exits.items() if n}
        _wait(
            "enters and exits as replay",
            30,
            lambda: changes("enter") == dict(enters) and changes("exit") == want_exits,
            evaluate,
        )
        s = _scrape(ports["evaluate"])
        assert changes("enter") == dict(enters) and changes("exit") == want_exits
        dead = _by(s, "streamsync_records_dead_lettered_total", "reason", topic=stream.pipelines)
        assert dead == {"malformed_json": 3}
        assert _sum(s, "streamsync_records_dead_lettered_total", topic=stream.webhooks) == 0

        # Sizes follow the committed deltas: members = enters - exits, holdout the
        # flagged ones (about half of the holdout audience, none elsewhere).
        live = [decode_json(m.value()) for m in read_committed(
            bootstrap, stream.deltas, count=len(expected), timeout_s=30)]  # fmt: skip
        assert len(live) == len(expected)
        members = Counter[str]()
        holdout = Counter[str]()
        for delta in live:
            step = 1 if delta.op == "enter" else -1
            members[delta.audience] += step
            holdout[delta.audience] += step if delta.holdout else 0
        sizes = _by(s, "streamsync_audience_members", "audience")
        assert sizes == {a.name: members[a.name] for a in audiences}
        assert _by(s, "streamsync_audience_holdout_members", "audience") == {
            a.name: holdout[a.name] for a in audiences
        }
        assert 0 < holdout[HOLDOUT_AUDIENCE] < members[HOLDOUT_AUDIENCE]
        assert _sum(s, "streamsync_audience_stuck_members") == 0
        assert _sum(s, "streamsync_event_to_delta_seconds_count") == len(expected)

        # Lag per input partition, from the consumer's own state (refreshed each second).
        def lags() -> dict[tuple[str, str], float]:
            return {
                (dict(labels)["topic"], dict(labels)["partition"]): v
                for (name, labels), v in _scrape(ports["evaluate"]).items()
                if name == "streamsync_consumer_lag" and ("group", stream.group) in labels
            }

        every = {(t, str(p)): 0.0 for t in (stream.pipelines, stream.webhooks) for p in range(2)}
        _wait("lag of every partition", 15, lambda: lags() == every, evaluate)
        assert _sum(s, "streamsync_ready") == 1

        # The delta of the traced record continues its trace; others carry none.
        traced_deltas = [
            m for m in read_committed(bootstrap, stream.deltas, count=len(expected), timeout_s=30)
            if traced_id in decode_json(m.value()).record_ids
        ]  # fmt: skip
        assert traced_deltas
        for message in traced_deltas:
            headers = dict(message.headers() or [])
            assert "other" not in headers
            context = extract_trace_context(list(headers.items()))
            span = get_current_span(context).get_span_context()
            assert format(span.trace_id, "032x") == TRACE_ID
            assert format(span.span_id, "016x") != TRACEPARENT.split("-")[2]

        # Deliver: requests answered per destination (a deliver that started after the
        # deltas were written backfills from the membership table)...
        for name in ("braze", "moengage"):
            _wait(
                f"{name} requests",
                45,
                lambda name=name: _sum(  # type: ignore[misc]
                    _scrape(ports[name]), "streamsync_destination_delivered_total",
                    destination=name,
                ) > 0,
            )  # fmt: skip
            d = _scrape(ports[name])
            assert _sum(d, "streamsync_destination_requests_total", destination=name) > 0
            assert _status(f"http://127.0.0.1:{ports[name]}/readyz") == 200
        # ... and a record produced now reaches both as a delta, its latency measured.
        buyer = f"buyer-{stream.run}"
        now_order = {
            "type": "track",
            "messageId": str(uuid.uuid4()),
            "userId": buyer,
            "event": "Order Completed",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "properties": {"order_id": "o-now", "total": 5.0},
            "traits": {"email": f"{buyer}@example.com"},
        }
        stream.produce([now_order])
        for name in ("braze", "moengage"):
            _wait(
                f"{name} delta latency",
                45,
                lambda name=name: _sum(  # type: ignore[misc]
                    _scrape(ports[name]), "streamsync_delta_to_destination_seconds_count"
                ) > 0,
            )  # fmt: skip
        # The buyer's enters are part of the sizes now (the restart below counts them);
        # evaluate's gauges follow its commit a moment after the delta is readable.
        before = sizes
        _wait(
            "the buyer in the sizes",
            30,
            lambda: (
                _by(_scrape(ports["evaluate"]), "streamsync_audience_members", "audience") != before
            ),
            evaluate,
        )
        s = _scrape(ports["evaluate"])
        sizes = _by(s, "streamsync_audience_members", "audience")
        holdout = Counter(_by(s, "streamsync_audience_holdout_members", "audience"))

        # A restart on a fresh state directory restores the partitions from the
        # changelog: progress reaches its target, the sizes are counted from the state.
        assert processes.stop(evaluate) == 0
        port = _free_port()
        again = _config(stream, tmp_path, "state-restarted", port, standins.urls)
        restarted = processes.start("evaluate-restarted", "evaluate", "--config", str(again))
        url = f"http://127.0.0.1:{port}"
        _wait("restarted ready", 45, lambda: _status(f"{url}/readyz") == 200, restarted)
        r = _scrape(port)
        restored = _by(r, "streamsync_state_restored_records", "partition")
        target = _by(r, "streamsync_state_restore_target_records", "partition")
        assert restored == target and set(target) == {"0", "1"} and min(target.values()) > 0
        assert _by(r, "streamsync_audience_members", "audience") == sizes
        assert _sum(r, "streamsync_audience_holdout_members") == sum(holdout.values())
        assert _sum(r, "streamsync_records_ingested_total") == 0  # nothing new to read


def _status(url: str) -> int:
    try:
        return get(url)[0]
    except OSError:
        return 0
