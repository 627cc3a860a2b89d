"""Control through the control topic, on the real broker against the strict stand-in:
``streamsync destinations ...`` changes running deliver replicas live.

* a rollout grown from the configured allowlist to 10% to 100% and shrunk, by command,
  while one deliver replica or two run: each step ends with the profiles equal to the
  desired state, each replica applying it to its own partitions;
* pause and resume of a destination while two replicas share its partitions: nothing is
  sent while paused, everything held is sent after;
* resync sends the whole desired state again (profiles the vendor lost are restored),
  detach removes an audience from exactly the profiles it was on, resume backfills it,
  and a paused audience is held while the destination's others are sent;
* status prints desired vs acknowledged per audience.

The stand-in is strict throughout: a remove of a value a profile never had would be a
violation.
"""

from __future__ import annotations

import logging
import sys
import textwrap
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from streamsync.cli import main
from streamsync.config import load_config
from streamsync.destinations.commands import ControlView, fold
from streamsync.destinations.deliver import DeliverLoop
from streamsync.destinations.operations import read_view
from streamsync.destinations.rollout import Cohort, Rollout
from streamsync.dev.standins import StandInAdmin, StandInServer
from streamsync.dev.standins.compare import braze_members, expected_members
from tests.destinations.conftest import BRAZE_KEY, delta
from tests.destinations.helpers import produce_with_members, synthetic_deltas
from tests.destinations.test_reconcile import SUBSCRIBED, WINBACK, _config, _topics


def test_the_control_records_fold_into_one_view() -> None:
    records = {
        ("pause", "A"): b"{}",
        ("detach", None): b"{}",
        ("rollout", None): b'{"customers": ["t"], "percent": 5, "at_ms": 1, "by": "ops"}',
        ("rollout", "B"): b'{"percent": 50}',
        ("resync", None): b'{"id": "r1"}',
        ("replica", "pod-1"): b'{"last_error": "503"}',
        ("pause", "C"): b"not json",  # a foreign record is left out
    }
    view = fold(records)  # type: ignore[arg-type]
    assert view.paused_audiences == {"A"} and not view.paused and view.detached_all
    assert view.rollout == Cohort(customers=frozenset({"t"}), percent=5)
    assert view.resyncs == {None: "r1"} and view.replicas["pod-1"]["last_error"] == "503"
    rollout = view.effective_rollout(Rollout(percent=100, audiences={"C": Cohort(percent=1)}))
    assert rollout.percent == 5 and rollout.customers == {"t"}
    assert set(rollout.audiences) == {"B", "C"}
    assert view.same_filter(fold({**records, ("pause", None): b"{}"}))  # type: ignore[dict-item]
    assert not view.same_filter(ControlView())


def _cli(path: Path, *args: str) -> None:
    assert main(["destinations", *args, "--config", str(path), "--destination", "braze"]) == 0


@pytest.fixture(autouse=True)
def _deliver_log(caplog: pytest.LogCaptureFixture) -> None:
    """Keep the replicas' INFO lines (assignments compared, control taken, resyncs), so a
    failing test shows how far each replica got, not only its warnings."""
    caplog.set_level(logging.INFO, logger="streamsync.deliver")


#: the replicas of the running test and how each ended (an error, or a result whose
#: ``error`` is set), so a wait fails at once naming a replica that stopped
_RUNNING: list[tuple[DeliverLoop, threading.Thread, list[object]]] = []


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Wait for ``condition``; fail at once naming a replica that stopped, and past
    ``timeout_s`` with what each replica was doing (its state and where its thread is),
    so a stalled replica is told apart from one that runs but sends nothing."""
    deadline = time.monotonic() + timeout_s
    while True:
        for index, (_, thread, ended) in enumerate(_RUNNING):
            assert thread.is_alive(), f"replica {index} stopped: {ended!r}"
        if condition():
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}\n{_replica_states()}")
        time.sleep(0.2)


def _replica_states() -> str:
    """One paragraph per running replica: partitions, the sink's state, the stack."""
    frames = sys._current_frames()
    lines = []
    for index, (loop, thread, _) in enumerate(_RUNNING):
        sink = loop.sink
        state = "no sink yet" if sink is None else (
            f"paused={sink.paused} buffered={sink.buffered} backlog={sink.backlog} "
            f"sending={sink.sending} requests={sink.stats.requests} "
            f"last_error={sink.last_error!r}"
        )  # fmt: skip
        lines.append(f"replica {index}: partitions {loop.partitions}, {state}")
        frame = frames.get(thread.ident or -1)
        if frame is not None:
            stack = "".join(traceback.format_stack(frame)[-8:]).rstrip()
            lines.append(textwrap.indent(stack, "    "))
    return "\n".join(lines)


@contextmanager
def _replicas(path: Path, count: int = 1) -> Iterator[list[DeliverLoop]]:
    config = load_config(path, env={})
    loops = [DeliverLoop(config, "braze", env={"K1": BRAZE_KEY}) for _ in range(count)]
    outcomes: list[list[object]] = [[] for _ in loops]

    def run(loop: DeliverLoop, ended: list[object]) -> None:
        try:
            result = loop.run(drain_timeout_s=5)
            ended.append(result.error if result.error is not None else "stopped")
        except BaseException as exc:  # reported by the test thread
            ended.append(exc)

    threads = [
        threading.Thread(target=run, args=(loop, ended))
        for loop, ended in zip(loops, outcomes, strict=True)
    ]
    _RUNNING[:] = list(zip(loops, threads, outcomes, strict=True))
    for thread in threads:
        thread.start()
    try:
        yield loops
    finally:
        _RUNNING.clear()
        for loop in loops:
            loop.stop()
        for thread in threads:
            thread.join(60)
    assert all(ended == ["stopped"] for ended in outcomes), outcomes


def _rolled(members: dict[str, set[str]], rollout: Rollout) -> dict[str, set[str]]:
    kept = {c: {a for a in values if rollout.includes(a, c)} for c, values in members.items()}
    return {c: values for c, values in kept.items() if values}


@pytest.mark.kafka
@pytest.mark.parametrize("replicas", [1, 2])
def test_a_rollout_changed_by_command_reconciles_the_running_deliver(
    tmp_path: Path, kafka_bootstrap_servers: str, standins: StandInServer, replicas: int
) -> None:
    deltas = synthetic_deltas(customers=200, events=5000, seed=31)
    topic, members_topic = _topics(kafka_bootstrap_servers, 4)
    produce_with_members(kafka_bootstrap_servers, topic, members_topic, 4, deltas)
    admin = StandInAdmin(standins.urls["braze"])
    admin.faults(strict=True)
    everyone = expected_members(deltas)
    testers = sorted(everyone)[:4]
    path = _config(
        tmp_path / "c.yaml", kafka_bootstrap_servers, topic, standins.urls["braze"],
        f"live-{uuid.uuid4().hex[:8]}", rollout={"customers": testers, "percent": 0},
    )  # fmt: skip

    def reaches(rollout: Rollout, what: str) -> None:
        want = _rolled(everyone, rollout)
        _wait(lambda: braze_members(admin.profiles()) == want, what)
        assert admin.report()["violations"] == []

    allowlist = frozenset(testers)
    with _replicas(path, replicas) as loops:
        _wait(lambda: all(loop.partitions for loop in loops), "every replica to own partitions")
        reaches(Rollout(customers=allowlist, percent=0), "the configured allowlist")
        _cli(path, "rollout", "--percent", "10", "--customers", ",".join(testers))
        reaches(Rollout(customers=allowlist, percent=10), "10%")
        _cli(path, "rollout", "--percent", "100")
        reaches(Rollout(), "100%")
        _cli(path, "rollout", "--audience", WINBACK, "--percent", "0")
        reaches(Rollout(audiences={WINBACK: Cohort(percent=0)}), f"{WINBACK} held back")
        _cli(path, "rollout", "--clear")  # back to the configuration: the testers only
        _cli(path, "rollout", "--audience", WINBACK, "--clear")
        reaches(Rollout(customers=allowlist, percent=0), "shrunk to the allowlist")
        stats = [loop.sink.stats for loop in loops if loop.sink is not None]
    # each replica applied the changes to its own partitions
    assert all(sum(s.detached.values()) > 0 and sum(s.backfilled.values()) > 0 for s in stats)
    assert admin.report()["counters"].get("remove_never_added", 0) == 0


@pytest.mark.kafka
def test_pause_and_resume_by_command_hold_both_replicas(
    tmp_path: Path, kafka_bootstrap_servers: str, standins: StandInServer
) -> None:
    deltas = synthetic_deltas(customers=150, events=3000, seed=32)
    half = len(deltas) // 2
    topic, members_topic = _topics(kafka_bootstrap_servers, 4)
    admin = StandInAdmin(standins.urls["braze"])
    admin.faults(strict=True)
    path = _config(
        tmp_path / "c.yaml", kafka_bootstrap_servers, topic, standins.urls["braze"],
        f"pause-{uuid.uuid4().hex[:8]}",
    )  # fmt: skip
    with _replicas(path, 2) as loops:
        _wait(lambda: all(loop.partitions for loop in loops), "both replicas to own partitions")
        produce_with_members(kafka_bootstrap_servers, topic, members_topic, 4, deltas[:half])
        first = expected_members(deltas[:half])
        _wait(lambda: braze_members(admin.profiles()) == first, "the first half")
        _cli(path, "pause")
        _wait(lambda: all(loop.sink is not None and loop.sink.paused for loop in loops),
              "both replicas to pause")  # fmt: skip
        requests = admin.report()["counters"]["requests"]
        produce_with_members(kafka_bootstrap_servers, topic, members_topic, 4, deltas[half:])
        # every replica holds its share of the second half, unsent
        _wait(lambda: sum(loop.sink.buffered for loop in loops if loop.sink) > 0
              and all(loop.sink is not None and loop.sink.next_wakeup(0) == 1.0
                      for loop in loops), "the held changes")  # fmt: skip
        assert admin.report()["counters"]["requests"] == requests
        assert braze_members(admin.profiles()) == first
        _cli(path, "resume")
        _wait(lambda: braze_members(admin.profiles()) == expected_members(deltas), "resume")
    assert admin.report()["violations"] == []


@pytest.mark.kafka
def test_resync_detach_resume_and_status(
    tmp_path: Path,
    kafka_bootstrap_servers: str,
    standins: StandInServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    deltas = synthetic_deltas(customers=120, events=3000, seed=33)
    topic, members_topic = _topics(kafka_bootstrap_servers, 2)
    produce_with_members(kafka_bootstrap_servers, topic, members_topic, 2, deltas)
    admin = StandInAdmin(standins.urls["braze"])
    admin.faults(strict=True)
    everyone = expected_members(deltas)
    path = _config(
        tmp_path / "c.yaml", kafka_bootstrap_servers, topic, standins.urls["braze"],
        f"resync-{uuid.uuid4().hex[:8]}",
    )  # fmt: skip
    users = standins.standins["braze"].users  # type: ignore[attr-defined]

    def profiles() -> dict[str, set[str]]:
        return braze_members(admin.profiles())

    with _replicas(path) as loops:
        _wait(lambda: profiles() == everyone, "the backfill")
        lost = sorted(everyone)[:10]
        for customer in lost:  # the vendor lost these profiles' values
            users[f"external_id:{customer}"]["streamsync_audiences"] = []
        _wait(lambda: all(c not in profiles() for c in lost), "the loss")
        _cli(path, "resync")
        _wait(lambda: profiles() == everyone, "the resync")

        _cli(path, "detach", "--audience", WINBACK)
        without = {c: v - {WINBACK} for c, v in everyone.items()}
        without = {c: v for c, v in without.items() if v}
        _wait(lambda: profiles() == without, "the detach")
        capsys.readouterr()
        _cli(path, "status")
        out = capsys.readouterr().out
        assert "held: " + WINBACK in out
        assert "1 replicas" in out.splitlines()[0]  # the running replica reported itself
        assert "replica " in out and "partitions 0,1, reported" in out
        subscribed = sum(1 for v in everyone.values() if SUBSCRIBED in v)
        row = next(line.split() for line in out.splitlines() if SUBSCRIBED in line)
        assert row[1:4] == [str(subscribed), str(subscribed), "0"]  # desired, acked, pending
        row = next(line.split() for line in out.splitlines() if line.strip().startswith(WINBACK))
        assert row[1:3] == ["0", "0"]

        _cli(path, "resume", "--audience", WINBACK)
        _wait(lambda: profiles() == everyone, "the re-attach")

        # one audience paused: its change is held, the other audience's is sent
        (loop,) = loops
        _cli(path, "pause", "--audience", WINBACK)
        _wait(lambda: loop.sink is not None and WINBACK in loop.sink.paused_audiences,
              "the audience pause")  # fmt: skip
        later = [delta("newcomer", WINBACK, "enter"), delta("newcomer", SUBSCRIBED, "enter")]
        produce_with_members(kafka_bootstrap_servers, topic, members_topic, 2, later)
        sink = loop.sink
        assert sink is not None
        _wait(lambda: SUBSCRIBED in profiles().get("newcomer", set()) and sink.buffered == 1,
              "the held audience")  # fmt: skip
        assert profiles()["newcomer"] == {SUBSCRIBED}
        _cli(path, "resume", "--audience", WINBACK)
        _wait(lambda: profiles().get("newcomer") == {SUBSCRIBED, WINBACK}, "the audience resume")
    assert admin.report()["violations"] == []
    assert admin.report()["counters"].get("remove_never_added", 0) == 0


@pytest.mark.kafka
def test_a_resync_written_while_no_replica_runs_is_applied_by_the_next_one(
    tmp_path: Path, kafka_bootstrap_servers: str, standins: StandInServer
) -> None:
    deltas = synthetic_deltas(customers=60, events=1200, seed=34)
    topic, members_topic = _topics(kafka_bootstrap_servers, 2)
    produce_with_members(kafka_bootstrap_servers, topic, members_topic, 2, deltas)
    admin = StandInAdmin(standins.urls["braze"])
    admin.faults(strict=True)
    everyone = expected_members(deltas)
    path = _config(
        tmp_path / "c.yaml", kafka_bootstrap_servers, topic, standins.urls["braze"],
        f"later-{uuid.uuid4().hex[:8]}",
    )  # fmt: skip
    users = standins.standins["braze"].users  # type: ignore[attr-defined]

    def profiles() -> dict[str, set[str]]:
        return braze_members(admin.profiles())

    with _replicas(path):
        _wait(lambda: profiles() == everyone, "the backfill")
    lost = sorted(everyone)[:10]
    for customer in lost:  # the vendor lost these profiles' values while deliver was down
        users[f"external_id:{customer}"]["streamsync_audiences"] = []
    _cli(path, "resync")
    with _replicas(path, 2) as loops:  # two, so the request reaches every partition's owner
        _wait(lambda: all(loop.partitions for loop in loops), "both replicas to own partitions")
        _wait(lambda: profiles() == everyone, "the resync written before the replicas started")
    # each partition's owner recorded it as applied: a later start does not send it again
    view = read_view(load_config(path, env={}), "braze")
    assert set(view.resynced) == {0, 1}
    assert [view.resyncs_due(p) for p in (0, 1)] == [[], []]
    assert admin.report()["violations"] == []


def test_a_resync_is_due_on_a_partition_until_its_owner_applied_it() -> None:
    records = {
        ("resync", None): b'{"id": "r2"}',
        ("resync", "A"): b'{"id": "a1"}',
        ("resynced", "0"): b'{"applied": [[null, "r1"], ["A", "a1"]]}',
        ("resynced", "1"): b'{"applied": [[null, "r2"], ["A", "a1"]]}',
        ("resynced", "x"): b'{"applied": []}',  # not a partition: left out
    }
    view = fold(records)  # type: ignore[arg-type]
    assert view.resynced == {0: {None: "r1", "A": "a1"}, 1: {None: "r2", "A": "a1"}}
    assert view.resyncs_due(0) == [None] and view.resyncs_due(1) == []
    assert view.resyncs_due(2) == [None, "A"]  # never applied there
    assert view.resyncs_due(0, {None: "r2"}) == []  # applied here since the topic was read


def test_mistakes_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(tmp_path / "c.yaml", "127.0.0.1:9", "t", "http://127.0.0.1:9", "g",
                   audiences=[SUBSCRIBED])  # fmt: skip
    base = ["destinations", "pause", "--config", str(path)]
    assert main([*base, "--destination", "braz"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "streamsync destinations pause: no destination named 'braz'; did you mean braze?"
    ]
    assert main([*base, "--destination", "braze", "--audience", "SUP__SubscriptionActiv"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean SUP__SubscriptionActive?" in err[0]
    rollout = ["destinations", "rollout", "--config", str(path), "--destination", "braze"]
    with pytest.raises(SystemExit) as exc:
        main([*rollout, "--percent", "abc"])
    assert exc.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main([*rollout, "--clear", "--customers", "a"]) == 2
