"""A task without Kafka: its watermark rules and its state round trip (changes written
to a store, loaded into a fresh task, evaluation continues exactly)."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from streamsync.audiences.compiler import DUE, PENDING
from streamsync.audiences.definition import STORED, Audience
from streamsync.audiences.loader import load_audiences
from streamsync.audiences.replay import replay
from streamsync.deltas.record import MembershipDelta
from streamsync.dev.synthetic import generate_records
from streamsync.ingest.event import Event, SourcePosition
from streamsync.ingest.jsonl import read_events
from streamsync.resources import project_path
from streamsync.runtime import task as task_module
from streamsync.runtime.task import UNKNOWN, Task
from streamsync.state import codec as codec_module
from streamsync.state.codec import (
    DEFINITIONS_KEY,
    IDS_PREFIX,
    StateError,
    encode_ids,
    segment_key,
)
from streamsync.state.store import PartitionStore

AUDIENCES = load_audiences(project_path("examples", "audiences"))


def _task(
    *, wall_clock: bool = False, lateness: int = 10, topics: tuple[str, ...] = ("a", "b")
) -> Task:
    return Task(
        0,
        list(topics),
        AUDIENCES,
        allowed_lateness_ms=lateness,
        dedup_horizon_ms=86_400_000,
        wall_clock=wall_clock,
        idle_grace_ms=500,
    )


def _event(topic: str, ts: int, customer: str = "c", offset: int = 0) -> Event:
    return Event(customer, "track", "x", ts, source=SourcePosition(topic, 0, offset))


def test_slowest_topic_holds_the_watermark_while_reading_a_backlog() -> None:
    task = _task()
    task.process(_event("a", 1_000))
    assert task.watermark(now_ms=10**13) == UNKNOWN  # b may still deliver old records
    task.process(_event("b", 400))
    assert task.watermark(now_ms=10**13) == 390
    task.process(_event("b", 2_000))
    assert task.watermark(now_ms=10**13) == 990


def test_without_the_wall_clock_an_empty_caught_up_topic_does_not_hold_back() -> None:
    task = _task(lateness=0)
    task.process(_event("a", 1_000))
    task.place("b", 0, 0)  # empty: its end offset is 0
    assert task.watermark(now_ms=10**13) == 1_000
    task.at_end("a", 1)
    assert task.watermark(now_ms=10**13) == 1_000  # event time only: the wall clock is off


def test_a_topic_whose_first_fetch_is_late_holds_back_until_it_reaches_its_end_offset() -> None:
    """Topics written together reach the consumer one fetch at a time: the first records
    of a topic whose fetch comes back later must not find the watermark already past
    them, however late that is. Only offsets decide, never a timer."""
    task = _task(lateness=0)
    task.place("a", 0, 3)
    task.place("b", 0, 2)  # two records to give, none arrived yet
    task.process(_event("a", 1_000))
    task.process(_event("a", 1_500, offset=1))
    task.place("a", 2, 3)
    far_later = int(time.time() * 1000) + 3_600_000
    assert task.watermark(now_ms=far_later) == UNKNOWN
    assert task.advance(far_later) == [] and task.engine.watermark < 1_000
    task.process(_event("b", 400))
    task.place("b", 1, 2)
    assert task.watermark(now_ms=far_later) == 400
    task.process(_event("b", 1_200, offset=1))
    task.place("b", 2, 2)  # at its end; without the wall clock it still counts its newest
    assert task.watermark(now_ms=far_later) == 1_200
    task.reopened()  # taken up again after a revoke: nothing is caught up until placed
    assert not any(task.caught_up.values())
    assert task.watermark(now_ms=far_later) == 1_200


def test_without_the_wall_clock_a_caught_up_topic_still_counts_its_own_progress() -> None:
    """Its producer may still append records older than the other topic's newest: only
    each partition's own order is certain."""
    task = _task(lateness=0)
    task.process(_event("a", 5_000))
    task.process(_event("b", 1_000))
    task.at_end("b", 1)
    assert task.watermark(now_ms=10**13) == 1_000
    task.at_end("a", 1)
    assert task.watermark(now_ms=10**13) == 1_000


def test_with_the_wall_clock_a_caught_up_topic_holds_nothing_back() -> None:
    task = _task(wall_clock=True, lateness=0)
    task.process(_event("a", 5_000))
    task.process(_event("b", 1_000))
    task.at_end("b", 1)
    assert task.watermark(now_ms=2_000) == 5_000  # a is still being read
    task.at_end("a", 1)
    assert task.watermark(now_ms=2_000) == 5_000  # all caught up: the later of the two
    assert task.watermark(now_ms=60_000) == 59_500


def test_an_end_offset_learned_later_makes_the_topic_busy_again() -> None:
    task = _task(lateness=0)
    task.process(_event("a", 1_000))
    task.at_end("a", 1)
    task.at_end("b", 0)
    assert all(task.caught_up.values())
    task.place("b", 0, 4)  # records appended to b after it was read to its end
    assert not task.caught_up["b"]
    task.place("b", 0, -1)  # an unknown end keeps the last one known
    assert not task.caught_up["b"]


def test_with_the_wall_clock_caught_up_topics_follow_it_minus_the_grace() -> None:
    task = _task(wall_clock=True, lateness=0)
    task.process(_event("a", 1_000))
    task.process(_event("b", 1_000))
    assert task.watermark(now_ms=50_000) == 1_000  # a backlog: event time only
    task.at_end("a", 1)
    assert task.watermark(now_ms=50_000) == 1_000  # b is still busy
    task.at_end("b", 1)
    assert task.watermark(now_ms=50_000) == 49_500


def _events(n: int) -> list[Event]:
    lines = [
        r if isinstance(r, bytes) else orjson.dumps(r) for r in generate_records(60, n, seed=3)
    ]
    out = []
    for offset, outcome in enumerate(read_events(lines, "t")):
        if isinstance(outcome, Event):
            outcome.source = SourcePosition("a", 0, offset)
            out.append(outcome)
    return out


def test_state_written_after_each_commit_restores_to_the_same_result(tmp_path: Path) -> None:
    """Commit every 97 records into a store, and at several points throw the task away
    and load a new one from the store: the deltas equal one uninterrupted run."""
    events = _events(4000)
    reference = _task(topics=("a",), lateness=5 * 60_000)
    expected = []
    for event in events:
        expected += reference.process(event)
        expected += reference.advance(0)
    expected += reference.finish(max(e.timestamp_ms for e in events))

    store = PartitionStore(tmp_path / "p0")
    task = _task(topics=("a",), lateness=5 * 60_000)
    task.load(store, "test")
    got = []
    for i, event in enumerate(events, start=1):
        got += task.process(event)
        got += task.advance(0)
        if i % 97 == 0:
            store.apply(task.changes(), i)
            if i % 970 == 0:  # a crash right after a commit: a new task from the store
                task = _task(topics=("a",), lateness=5 * 60_000)
                task.load(store, "test")
    got += task.finish(max(e.timestamp_ms for e in events))
    key = lambda d: (d.audience, d.customer_id, d.op, d.at_ms, d.seq, tuple(d.record_ids))  # noqa: E731
    assert sorted(map(key, got)) == sorted(map(key, expected))
    assert len(expected) > 300
    store.close()


def _task_of(audiences: list[Audience]) -> Task:
    return Task(
        0,
        ["a"],
        audiences,
        allowed_lateness_ms=5 * 60_000,
        dedup_horizon_ms=86_400_000,
        wall_clock=False,
        idle_grace_ms=500,
    )


def test_state_of_other_definitions_without_their_record_is_refused(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0")
    task = _task(topics=("a",))
    for event in _events(200):
        task.process(event)
    changes = task.changes()
    del changes[DEFINITIONS_KEY]  # as written before definitions were recorded
    store.apply(changes, 1)
    with pytest.raises(StateError, match="other audience definitions"):
        _task_of(AUDIENCES[:-1]).load(store, "test[0]")
    store.close()


def test_state_of_another_customer_layout_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PartitionStore(tmp_path / "p0")
    task = _task(topics=("a",))
    for event in _events(200):
        task.process(event)
    store.apply(task.changes(), 1)
    monkeypatch.setattr(codec_module, "LAYOUT_VERSION", codec_module.LAYOUT_VERSION + 1)
    monkeypatch.setattr(task_module, "LAYOUT_VERSION", codec_module.LAYOUT_VERSION)
    with pytest.raises(StateError, match="customer layout"):
        _task(topics=("a",)).load(store, "test[0]")
    store.close()


def _changed_definitions() -> list[Audience]:
    """The cart window shortened (version 2), the last audience removed, one added."""
    out = []
    for audience in AUDIENCES[:-1]:
        if audience.name == "ACT__CartAbandon__90m":
            entry = audience.entry.model_dump(by_alias=True, exclude_unset=True)
            entry["since_last"]["at_least"] = 60 * 60_000
            data = audience.model_dump(by_alias=True, exclude_unset=True)
            changed = {**data, "entry": entry, "version": 2}
            audience = Audience.model_validate(changed, context=STORED)
        out.append(audience)
    added = {
        "name": "ACT__Carted__1h",
        "version": 1,
        "owner": "o",
        "description": "d",
        "entry": {"since_last": {"event": "Product Added", "less_than": "1h"}},
    }
    return [*out, Audience.model_validate(added)]


def test_changed_definitions_are_applied_to_stored_state(tmp_path: Path) -> None:
    events = _events(3000)
    cut = len(events) // 2
    new = _changed_definitions()
    reference = _task_of(new)
    for event in events:
        reference.process(event)
        reference.advance(0)
    end = max(e.timestamp_ms for e in events)
    reference.finish(end)

    store = PartitionStore(tmp_path / "p0")
    task = _task_of(AUDIENCES)
    task.load(store, "test")
    for event in events[:cut]:
        task.process(event)
        task.advance(0)
    store.apply(task.changes(), 1)
    before = task.sizes()
    removed = AUDIENCES[-1].name
    assert before[removed][0] > 0

    task = _task_of(new)
    task.load(store, "test")
    assert task.migration is not None
    deltas = task.migrate({})
    assert deltas and all(d.definition_change for d in deltas)
    exits = [d for d in deltas if d.audience == removed]
    assert len(exits) == before[removed][0] and {d.op for d in exits} == {"exit"}
    assert {d.audience for d in deltas} <= {removed, "ACT__CartAbandon__90m", "ACT__Carted__1h"}
    assert {d.version for d in deltas if d.audience == "ACT__CartAbandon__90m"} <= {2}
    store.apply(task.changes(), 2)
    task.persist({}, None)  # the converted customers are in the store now
    for event in events[cut:]:
        task.process(event)
        task.advance(0)
    task.finish(end)
    assert task.sizes() == reference.sizes()

    again = _task_of(new)  # the next start with the same definitions: nothing to do
    again.load(store, "test")
    assert again.migration is None
    store.close()


def test_replay_matches_the_task_on_the_synthetic_stream() -> None:
    events = _events(3000)
    task = _task(topics=("a",), lateness=5 * 60_000)
    got = []
    for event in events:
        got += task.process(event)
    got += task.finish(max(e.timestamp_ms for e in events))
    expected = list(replay(AUDIENCES, iter(events), progress=None))
    key = lambda d: (d.audience, d.customer_id, d.op, d.at_ms, d.seq)  # noqa: E731
    assert sorted(map(key, got)) == sorted(map(key, expected))


def _events_of(customers: int, n: int) -> list[Event]:
    lines = [
        r if isinstance(r, bytes) else orjson.dumps(r)
        for r in generate_records(customers, n, seed=5)
    ]
    out = []
    for offset, outcome in enumerate(read_events(lines, "t")):
        if isinstance(outcome, Event):
            outcome.source = SourcePosition("a", 0, offset)
            out.append(outcome)
    return out


def _key(d: MembershipDelta) -> tuple[object, ...]:
    return (d.audience, d.customer_id, d.op, d.at_ms, d.seq, tuple(d.record_ids))


@pytest.mark.parametrize("keep", [0, 7])
def test_a_small_customer_cache_gives_the_same_deltas(tmp_path: Path, keep: int) -> None:
    """Hold at most ``keep`` customers in memory: the others are read back from the store
    when a record of theirs is applied or their deadline comes due (also after restarts
    from the store), and the deltas, seq included, equal an unbounded run's."""
    events = _events_of(300, 6000)
    until = max(e.timestamp_ms for e in events) + 30 * 86_400_000
    reference = _task(topics=("a",), lateness=5 * 60_000)
    expected = []
    for event in events:
        expected += reference.process(event)
        expected += reference.advance(0)

    store = PartitionStore(tmp_path / "p0")
    task = _task(topics=("a",), lateness=5 * 60_000)
    task.load(store, "test")
    got = []
    most = 0
    for i, event in enumerate(events, start=1):
        got += task.process(event)
        got += task.advance(0)
        if i % 50 == 0:
            task.persist(task.changes(), i, keep=keep)
            held = task.engine.customers
            pending = sum(1 for c in held.values() if c[PENDING])
            assert len(held) <= keep + pending
            most = max(most, len(held))
            if i % 1000 == 0:  # a crash right after a commit: a new task from the store
                task = _task(topics=("a",), lateness=5 * 60_000)
                task.load(store, "test")
                assert not task.engine.customers  # opening reads no customer
    task.persist(task.changes(), len(events), keep=keep)
    assert sorted(map(_key, got)) == sorted(map(_key, expected))
    assert task.sizes() == reference.sizes() == reference.engine.member_counts()

    # Restarted with every customer out of memory, a month with no input: every
    # deadline fires from the store's timer index, as in the unbounded run.
    task = _task(topics=("a",), lateness=5 * 60_000)
    assert task.load(store, "test") == len(reference.engine.customers) == 300
    tail = task.finish(until)
    expected_tail = reference.finish(until)
    assert sorted(map(_key, tail)) == sorted(map(_key, expected_tail))
    assert len(expected) > 500 and len(expected_tail) > 50
    assert most < 60
    assert task.sizes() == reference.sizes() == reference.engine.member_counts()
    store.close()


def test_deadlines_passed_at_once_are_read_back_a_few_per_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After downtime the wall clock passes many deadlines at once: each commit reads back
    at most ``READ_DUE_PER_COMMIT`` customers (plus the rest of one instant), and the
    deadlines still fire in time order with the unbounded run's deltas."""
    monkeypatch.setattr(task_module, "READ_DUE_PER_COMMIT", 1)
    events = _events_of(120, 2400)
    newest = max(e.timestamp_ms for e in events)
    reference = _task(topics=("a",), lateness=0)
    for event in events:
        reference.process(event)
    reference.advance(0)
    store = PartitionStore(tmp_path / "p0")
    task = _task(topics=("a",), lateness=0)
    task.load(store, "test")
    for event in events:
        task.process(event)
    task.advance(0)
    task.persist(task.changes(), 1, keep=0)

    now = newest + 30 * 86_400_000
    due = sum(1 for c in reference.engine.customers.values() if c[DUE] < now - 500)
    expected = reference.finish(now - 500)
    restarted = _task(topics=("a",), lateness=0, wall_clock=True)
    restarted.load(store, "test")
    restarted.at_end("a", 1)
    got: list[MembershipDelta] = []
    commits = 0
    while restarted.engine.watermark < now - 500:
        before = restarted.engine.watermark
        got += restarted.advance(now)
        assert restarted.engine.watermark > before  # progress every commit
        read_back = len(restarted.engine.customers)
        restarted.persist(restarted.changes(), commits + 2, keep=0)
        commits += 1
        assert read_back <= 1 + 2, read_back  # 1, plus the rest of one instant
    assert due >= 10 and commits >= due // 3
    assert sorted(map(_key, got)) == sorted(map(_key, expected))
    assert sorted(d.at_ms for d in got) == [d.at_ms for d in got]
    store.close()


def test_record_ids_are_remembered_in_the_store_not_in_memory(tmp_path: Path) -> None:
    """After a commit the ids accepted live only in the store's record-id index: a
    redelivered record is still a duplicate (also in a task restored from the store),
    and the ids leave the index with their segment, two dedup horizons later."""
    horizon = 60_000
    events = _events_of(50, 400)
    store = PartitionStore(tmp_path / "p0")

    def task() -> Task:
        t = Task(
            0,
            ["a"],
            AUDIENCES,
            allowed_lateness_ms=0,
            dedup_horizon_ms=horizon,
            wall_clock=False,
            idle_grace_ms=0,
        )
        t.load(store, "test")
        return t

    first = task()
    for event in events:
        first.process(event)
    first.advance(0)
    first.persist(first.changes(), 1)
    ids = {e.record_id for e in events if e.record_id is not None}
    assert len(ids) > 300
    assert not first.engine._seen and not first.engine._seen_old  # nothing held in memory
    assert all(store.has_record_id(rid) for rid in ids)

    for again in (first, task()):  # the same process, and after a restart
        before = again.engine.stats.duplicates
        assert [d for e in events[:100] for d in again.process(e)] == []
        assert again.engine.stats.duplicates - before == 100

    # Far later records: the old segment expires (with its ids) after two horizons.
    late = task()
    newest = max(e.timestamp_ms for e in events)
    for n, ts in enumerate(range(newest + horizon, newest + 4 * horizon, horizon // 2)):
        late.process(Event("x", "track", "Tick", ts, f"tick-{n}", source=SourcePosition("a", 0, n)))
        late.advance(0)
        late.persist(late.changes(), 10 + n)
    assert not any(store.has_record_id(rid) for rid in ids)
    assert store.has_record_id("tick-5")
    store.close()


def test_record_ids_of_rekeyed_records_stay_indexed_while_the_inputs_lag(
    tmp_path: Path,
) -> None:
    """A task's input progress can lag far behind the records it accepts: re-keyed
    records move a repartition input only through the marks that follow them, and a
    backlog read unevenly leaves a keyed input behind. The id segment of those records
    must still live two dedup horizons of the records' own time, so a copy of one read
    after the commit (a raw record re-keyed twice across a crash, a producer's resend)
    is a duplicate. It used to be stamped with the inputs' progress and dropped with the
    same commit, its ids never indexed: a repeated view was counted twice live."""
    horizon = 60_000
    store = PartitionStore(tmp_path / "p0")

    def task() -> Task:
        t = Task(
            0,
            ["a", "r"],
            AUDIENCES,
            allowed_lateness_ms=0,
            dedup_horizon_ms=horizon,
            wall_clock=False,
            idle_grace_ms=0,
            merged={"r": frozenset({"raw[0]"})},
        )
        t.load(store, "test")
        return t

    live = task()
    live.process(Event("x", "track", "Tick", 1_000, "tick-0", source=SourcePosition("a", 0, 0)))
    rekeyed = [
        Event(f"c{n % 7}", "track", "Product Viewed", 1_000 + n * horizon, f"view-{n}",
              properties={"product_id": "p1"}, source=SourcePosition("r", 0, n))
        for n in range(1, 9)
    ]  # fmt: skip
    for event in rekeyed:
        live.process(event)
    live.advance(0)
    live.persist(live.changes(), 1)
    assert store.has_record_id("view-8")
    for again in (live, task()):  # the same process, and after a restart
        before = again.engine.stats.duplicates
        for event in rekeyed[-2:]:
            assert again.process(event) == []
        assert again.engine.stats.duplicates - before == 2
    store.close()


def test_record_ids_leave_the_index_with_their_segment(tmp_path: Path) -> None:
    """Also when the segment's removal comes from the changelog into a fresh copy."""
    store = PartitionStore(tmp_path / "p0")
    first, second = segment_key(IDS_PREFIX, 1), segment_key(IDS_PREFIX, 2)
    store.apply({first: encode_ids(["a", "b"])}, 1)
    store.apply({second: encode_ids(["c"]), first: None}, 2)
    assert not store.has_record_id("a") and not store.has_record_id("b")
    assert store.has_record_id("c")
    store.apply({second: None}, 3)
    assert not store.has_record_id("c")
    store.close()


def test_a_cycle_of_large_buffered_records_is_split_into_segments(tmp_path: Path) -> None:
    """A backlog of 9 KB records buffered in one cycle used to become one changelog
    value beyond the topic's limit (MSG_SIZE_TOO_LARGE on every restart): each value
    now stays within SEGMENT_BYTES, and a task restored from them has every record."""
    events = [
        Event(
            f"c{i % 40}",
            "track",
            "Product Added",
            1_000_000 + i,
            f"r{i}",
            {"blob": f"{i:05d}" + "x" * 9_000},  # distinct: marshal shares equal objects
            source=SourcePosition("a", 0, i),
        )
        for i in range(400)
    ]
    task = _task(topics=("a",), lateness=10**9)  # nothing is released: all stay buffered
    for event in events:
        task.process(event)
    changes = task.changes()
    segments = [v for k, v in changes.items() if k.startswith(b"e:") and v is not None]
    assert len(segments) > 2
    assert all(len(v) <= task_module.SEGMENT_BYTES for v in segments)
    store = PartitionStore(tmp_path / "p0")
    store.apply(changes, 1)
    again = _task(topics=("a",), lateness=10**9)
    again.load(store, "test")
    assert sorted(e.record_id or "" for _, _, e in again.engine.buffered) == sorted(
        e.record_id or "" for e in events
    )
    store.close()
