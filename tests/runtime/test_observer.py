"""What the evaluate service reports, without a broker: deltas count only once committed,
sizes start from restored state, stuck members are overdue exits, revoked partitions
leave no gauges behind."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson

from streamsync.audiences.engine import Engine
from streamsync.audiences.loader import load_audiences
from streamsync.deltas.record import MembershipDelta
from streamsync.ingest.jsonl import read_events
from streamsync.ingest.outcomes import TopicStats
from streamsync.observability.health import Health
from streamsync.observability.metrics import Telemetry
from streamsync.runtime.observer import EvaluateObserver
from streamsync.runtime.task import Task
from tests.observability.scrape import value

AUDIENCES = """
audiences:
  - name: BUYERS_7D
    version: 1
    owner: retention@example.com
    description: Ordered in the last seven days; a fifth held out.
    entry:
      count: {event: Order Completed, at_least: 1, within: 7d}
    holdout: {percent: 20}
  - name: VIP
    version: 1
    owner: retention@example.com
    description: Spent over 100 net of refunds; left only by a refund (no deadline).
    entry:
      sum:
        add: [{event: Order Completed, field: total}]
        subtract: [{event: Order Refunded, field: total}]
        greater_than: 100
"""
DAY = 86_400_000
T0 = 1_767_225_600_000


def _order(customer: str, ms: int, total: float) -> bytes:
    stamp = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    record = {
        "type": "track",
        "messageId": str(uuid.uuid4()),
        "userId": customer,
        "event": "Order Completed",
        "timestamp": stamp,
        "properties": {"total": total},
    }
    return orjson.dumps(record)


def _samples(telemetry: Telemetry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(telemetry.render().decode()):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def _engine(tmp_path: Path) -> Engine:
    (tmp_path / "a.yaml").write_text(AUDIENCES)
    return Engine(load_audiences(tmp_path / "a.yaml"), allowed_lateness_ms=0)


def test_members_holdout_and_overdue_exits_come_from_the_engine_state(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    lines = [_order(f"c{i}", T0 + i * 1000, 150.0 if i % 2 else 20.0) for i in range(40)]
    deltas: list[MembershipDelta] = []
    for event in read_events(lines):
        deltas += engine.process(event)
    deltas += engine.advance_to(T0 + DAY)
    counts = engine.member_counts()
    holdout = Counter(d.audience for d in deltas if d.holdout and d.op == "enter")
    assert counts == {"BUYERS_7D": (40, holdout["BUYERS_7D"]), "VIP": (20, 0)}
    assert 0 < holdout["BUYERS_7D"] < 40
    # Their exits are due seven days after each order: overdue only once that is past.
    assert engine.overdue_members(T0 + 7 * DAY) == {"BUYERS_7D": 0}
    assert engine.overdue_members(T0 + 7 * DAY + 19_500) == {"BUYERS_7D": 20}
    assert engine.overdue_members(T0 + 30 * DAY) == {"BUYERS_7D": 40}
    engine.advance_to(T0 + 8 * DAY)  # the exits fire: nobody is stuck, VIP stays
    assert engine.overdue_members(T0 + 30 * DAY) == {"BUYERS_7D": 0}
    assert engine.member_counts() == {"BUYERS_7D": (0, 0), "VIP": (20, 0)}


def test_counts_are_reported_after_commit_only(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(AUDIENCES)
    audiences = load_audiences(tmp_path / "a.yaml")
    telemetry = Telemetry(role="evaluate")
    observer = EvaluateObserver(
        telemetry, group="g", audiences=[a.name for a in audiences], stuck_after_ms=0
    )
    task = Task(
        0, ["t"], audiences, allowed_lateness_ms=0, dedup_horizon_ms=DAY, wall_clock=False,
        idle_grace_ms=0,
    )  # fmt: skip
    observer.task_opened(task)
    observer.restore_progress(0, 5, 5)
    events = list(read_events([_order(f"c{i}", T0 + i, 150.0) for i in range(3)]))
    for event in events:
        task.process(event)
    deltas = task.engine.advance_to(T0 + 10)
    assert len(deltas) == 6
    stats = {"t": TopicStats(decoded=3)}

    observer.emitted(deltas, 0)
    observer.aborted()  # the transaction never happened
    s = _samples(telemetry)
    assert value(s, "streamsync_audience_changes_total", audience="VIP", op="enter") is None
    assert value(s, "streamsync_audience_members", audience="VIP") == 0

    observer.emitted(deltas, 0)
    observer.committed(_Stats(stats))  # type: ignore[arg-type]
    observer.committed(_Stats(stats))  # type: ignore[arg-type]  # nothing new: no double count
    s = _samples(telemetry)
    assert value(s, "streamsync_audience_changes_total", audience="VIP", op="enter") == 3
    assert value(s, "streamsync_audience_members", audience="VIP") == 3
    assert value(s, "streamsync_records_ingested_total", topic="t") == 3
    assert value(s, "streamsync_event_to_delta_seconds_count") == 6
    assert value(s, "streamsync_state_restored_records", partition="0") == 5

    observer.tick(None, [task])  # exits due at T0 + 7d, long past by the wall clock
    s = _samples(telemetry)
    assert value(s, "streamsync_audience_stuck_members", audience="BUYERS_7D") == 3
    assert value(s, "streamsync_audience_stuck_members", audience="VIP") == 0

    observer.revoked([0])
    s = _samples(telemetry)
    assert value(s, "streamsync_audience_members", audience="VIP") == 0
    assert value(s, "streamsync_state_restored_records", partition="0") is None
    telemetry.shutdown()


class _Stats:
    def __init__(self, topics: dict[str, TopicStats]) -> None:
        self.topics = topics
        self.late = self.too_late = self.keys_dropped = 0


class _Message:
    def __init__(self, headers: list[tuple[str, bytes]] | None) -> None:
        self._headers = headers

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers


def test_readiness_follows_restores_and_deltas_continue_their_records_trace(
    tmp_path: Path,
) -> None:
    telemetry = Telemetry(role="evaluate")
    observer = EvaluateObserver(telemetry, group="g", audiences=["A"], stuck_after_ms=0)
    assert telemetry.health.readiness()[0] is False  # nothing restored yet
    observer.assigned()
    assert telemetry.health.readiness() == (True, "")
    observer.restoring([2, 0])
    assert telemetry.health.readiness() == (False, "restoring state of partitions 0, 2")
    observer.assigned()
    assert telemetry.health.readiness()[0] is True

    trace_id = "0af7651916cd43dd8448eb211c80319c"
    parent = f"00-{trace_id}-b7ad6b7169203331-01"
    [traced, plain] = list(read_events([_order("c1", T0, 1.0), _order("c2", T0, 1.0)]))
    assert not observer.tracing  # nothing to follow: deltas get no headers at all
    observer.received(_Message([("traceparent", parent.encode()), ("x", b"y")]), traced)  # type: ignore[arg-type]
    observer.received(_Message(None), plain)  # type: ignore[arg-type]
    assert observer.tracing

    def delta(record_id: str | None) -> MembershipDelta:
        ids = [record_id] if record_id is not None else []
        return MembershipDelta("A", 1, "c", "enter", T0, 1, ids)

    headers = observer.trace_headers(delta(traced.record_id))
    assert headers is not None and [name for name, _ in headers] == ["traceparent"]
    value = headers[0][1]
    assert isinstance(value, bytes)
    version, got_trace, span, _flags = value.decode().split("-")
    assert (version, got_trace) == ("00", trace_id) and span != "b7ad6b7169203331"
    assert observer.trace_headers(delta(plain.record_id)) is None
    telemetry.shutdown()


def test_a_restore_that_reads_on_keeps_the_process_alive() -> None:
    """A restore longer than the stall timeout is not a stalled loop: each step of it
    beats, so the liveness probe does not kill a pod restoring a large partition."""
    now = [0.0]
    telemetry = Telemetry(role="evaluate", health=Health(stall_timeout=300, clock=lambda: now[0]))
    observer = EvaluateObserver(telemetry, group="g", audiences=["A"], stuck_after_ms=0)
    observer.restoring([0])
    for step in range(1, 11):
        now[0] = step * 100.0  # 1,000 s of restoring, 100 s per step
        observer.restore_progress(0, step, 10)
        assert telemetry.health.liveness() == (True, "")
        assert telemetry.health.readiness()[0] is False
    now[0] += 301
    assert telemetry.health.liveness()[0] is False  # and a restore that stops is a stall
