"""Delivery as reconciliation, on the real broker against strict stand-ins.

Deltas and the membership table are written as evaluate writes them (same transactions,
partitioned alike). A destination started afterwards is backfilled from the table and
ends with exactly replay's current members; changing its audience list backfills the
added audience and detaches the removed one from exactly the profiles it was on; an
audience retired from the table is detached; a deliver killed mid-backfill resumes from
its acknowledged state; of two replicas, the one left when the other is killed
mid-backfill is given its partitions and converges. The stand-ins run in strict mode
throughout: a remove of a value a profile never had would be a violation.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamsync.config import load_config
from streamsync.deltas.membership import member_key, parse_member_key
from streamsync.deltas.record import MembershipDelta
from streamsync.destinations.acknowledged import Acked, acknowledged_topic, decode_acked
from streamsync.destinations.deliver import DeliverLoop, DeliverResult
from streamsync.dev.standins import StandInAdmin, StandInServer
from streamsync.dev.standins.compare import braze_members, differences, expected_members
from tests.destinations.conftest import BRAZE_KEY, delta
from tests.destinations.helpers import produce_with_members, synthetic_deltas, write_config
from tests.topics import create_topics

pytestmark = pytest.mark.kafka

SUBSCRIBED, WINBACK = "SUP__SubscriptionActive", "ACT__Winback__60to120d"


def _topics(bootstrap: str, partitions: int) -> tuple[str, str]:
    """A deltas topic and its membership table (``<deltas>.members``, the default)."""
    topic = f"deltas-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    create_topics(
        admin,
        [NewTopic(topic, partitions, 1),
         NewTopic(topic + ".members", partitions, 1, config={"cleanup.policy": "compact"})],
    )  # fmt: skip
    return topic, topic + ".members"


def _config(path: Path, bootstrap: str, topic: str, url: str, group: str, **settings: Any) -> Path:
    braze = {
        "kind": "braze", "base_url": url, "credentials": {"env": "K1"}, "group_id": group,
        "rate_limit": {"limit": 50, "window_s": 1.0}, "batching": {"linger_ms": 20},
        "retry": {"initial_backoff_s": 0.05, "max_backoff_s": 0.5, "timeout_s": 2.0},
        **settings,
    }  # fmt: skip
    return write_config(path, bootstrap, topic, {"braze": braze})


def _only(members: Mapping[str, set[str]], audiences: set[str]) -> dict[str, set[str]]:
    kept = {c: values & audiences for c, values in members.items()}
    return {c: values for c, values in kept.items() if values}


def _acknowledged(bootstrap: str, group: str) -> dict[tuple[str, str], Acked | None]:
    """The latest entry of every key of deliver group ``group``'s acknowledged topic."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex}",
         "auto.offset.reset": "earliest", "enable.auto.commit": False,
         "enable.partition.eof": True}
    )  # fmt: skip
    topic = acknowledged_topic(group)
    count = len(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in range(count)])
    out: dict[tuple[str, str], Acked | None] = {}
    done: set[int] = set()
    deadline = time.monotonic() + 60
    try:
        while len(done) < count:
            assert time.monotonic() < deadline, "the acknowledged topic was not read"
            for message in consumer.consume(1000, 0.5):
                error = message.error()
                if error is not None:
                    assert error.code() == KafkaError._PARTITION_EOF, error
                    done.add(message.partition() or 0)
                    continue
                key = parse_member_key(message.key() or b"")
                value = message.value()
                out[key] = None if value is None else decode_acked(value)
    finally:
        consumer.close()
    return out


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@contextmanager
def _delivering(path: Path) -> Iterator[list[DeliverResult]]:
    """A deliver loop in a thread for the block; its result once it stopped (an error in
    the loop fails the test)."""
    loop = DeliverLoop(load_config(path, env={}), "braze", env={"K1": BRAZE_KEY})
    results: list[DeliverResult] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(loop.run(drain_timeout_s=5))
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield results
    finally:
        loop.stop()
        thread.join(60)
    assert not errors, errors
    assert results and results[0].error is None


def test_a_destination_started_after_the_deltas_ends_with_the_current_members(
    tmp_path: Path, kafka_bootstrap_servers: str, standins: StandInServer
) -> None:
    deltas = synthetic_deltas(customers=200, events=6000, seed=5)
    topic, members_topic = _topics(kafka_bootstrap_servers, 3)
    produce_with_members(kafka_bootstrap_servers, topic, members_topic, 3, deltas)
    admin = StandInAdmin(standins.urls["braze"])
    admin.faults(strict=True)
    path = _config(
        tmp_path / "c.yaml", kafka_bootstrap_servers, topic, standins.urls["braze"],
        f"late-{uuid.uuid4().hex[:8]}",
        audience_options={SUBSCRIBED: {"enter_event": "entered_active"}},
    )  # fmt: skip
    expected = expected_members(deltas)
    memberships = sum(len(v) for v in expected.values())

    def profiles() -> dict[str, set[str]]:
        return braze_members(admin.profiles())

    with _delivering(path) as results:
        _wait(lambda: not differences(expected, profiles()), "the backfill to match replay")
        # then the deltas keep it current in real time
        member, values = sorted(expected.items())[0]
        left = sorted(values)[0]
        later = [delta(member, left, "exit", seq=10**6), delta("newcomer", WINBACK, "enter")]
        produce_with_members(kafka_bootstrap_servers, topic, members_topic, 3, later)
        expected_now = expected_members([*deltas, *later])
        _wait(lambda: profiles() == expected_now, "the real-time deltas")
    result = results[0]
    # the history came from the table: of the deltas, only those written later were read
    assert result.consumed == len(later)
    assert sum(result.stats.backfilled.values()) == memberships
    assert result.stats.delivered[(WINBACK, "enter")] == memberships_of(expected, WINBACK) + 1
    # a backfill is no entry: only the real-time enter may fire an event (none here)
    assert admin.profiles()["events"] == {}
    assert admin.report()["violations"] == []


def memberships_of(members: Mapping[str, set[str]], audience: str) -> int:
    return sum(1 for values in members.values() if audience in values)


def test_adding_removing_and_retiring_audiences_reconciles_the_profiles(
    tmp_path: Path, kafka_bootstrap_servers: str, standins: StandInServer
) -> None:
    deltas = synthetic_deltas(customers=150, events=4000, seed=8)
    topic, members_topic = _topics(kafka_bootstrap_servers, 2)
    produce_with_members(kafka_bootstrap_servers, topic, members_topic, 2, deltas)
    admin = StandInAdmin(standins.urls["braze"])
    admin.faults(strict=True)
    group = f"lists-{uuid.uuid4().hex[:8]}"
    everyone = expected_members(deltas)
    manual = next(iter(sorted(everyone)))
    # a value someone else put in the shared attribute stays through every step
    standins.standins["braze"].users[f"external_id:{manual}"] = {  # type: ignore[attr-defined]
        "streamsync_audiences": ["manual"]
    }

    def profiles() -> dict[str, set[str]]:
        found = braze_members(admin.profiles())
        assert "manual" in found.get(manual, set())
        return _only(found, {SUBSCRIBED, WINBACK})

    def step(audiences: list[str], want: dict[str, set[str]]) -> DeliverResult:
        path = _config(
            tmp_path / "c.yaml", kafka_bootstrap_servers, topic, standins.urls["braze"],
            group, audiences=audiences,
        )  # fmt: skip
        with _delivering(path) as results:
            _wait(lambda: profiles() == want, f"profiles for {audiences}")
        assert admin.report()["violations"] == []
        return results[0]

    step([SUBSCRIBED], _only(everyone, {SUBSCRIBED}))
    added = step([SUBSCRIBED, WINBACK], _only(everyone, {SUBSCRIBED, WINBACK}))
    assert sum(added.stats.backfilled.values()) == memberships_of(everyone, WINBACK)
    removed = step([WINBACK], _only(everyone, {WINBACK}))
    assert sum(removed.stats.detached.values()) == memberships_of(everyone, SUBSCRIBED)
    assert sum(removed.stats.backfilled.values()) == 0

    # WINBACK retired: its records leave the table (as compaction leaves it), no deltas
    producer = Producer({"bootstrap.servers": kafka_bootstrap_servers})
    for customer, values in everyone.items():
        if WINBACK in values:
            partition = zlib.crc32(customer.encode()) % 2
            producer.produce(
                members_topic, key=member_key(WINBACK, customer), value=None, partition=partition
            )
    producer.flush(30)
    retired = step([WINBACK], {})
    assert sum(retired.stats.detached.values()) == memberships_of(everyone, WINBACK)
    assert admin.report()["counters"].get("remove_never_added", 0) == 0


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "K1": BRAZE_KEY}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # the config names the broker
    return subprocess.Popen(
        [sys.executable, "-m", "streamsync", "deliver", "--config", str(config),
         "--destination", "braze"],
        env=env, stdout=subprocess.PIPE, stderr=log.open("wb"),
    )  # fmt: skip


def test_a_deliver_killed_mid_backfill_resumes_and_converges_exactly(
    tmp_path: Path, kafka_bootstrap_servers: str, standins: StandInServer
) -> None:
    deltas: list[MembershipDelta] = synthetic_deltas(customers=400, events=8000, seed=13)
    topic, members_topic = _topics(kafka_bootstrap_servers, 3)
    produce_with_members(kafka_bootstrap_servers, topic, members_topic, 3, deltas)
    admin = StandInAdmin(standins.urls["braze"])
    admin.faults(strict=True)
    # 5 customers a request, 10 requests a second: the backfill takes several seconds
    expected = expected_members(deltas)
    assert len(expected) > 150

    def objects() -> int:
        return int(admin.report()["counters"].get("objects", 0))

    group = f"killed-{uuid.uuid4().hex[:8]}"
    path = _config(
        tmp_path / "c.yaml", kafka_bootstrap_servers, topic, standins.urls["braze"],
        group, max_objects_per_request=5, rate_limit={"limit": 10, "window_s": 1.0},
    )  # fmt: skip
    proc = _start(path, tmp_path / "first.log")
    try:
        _wait(lambda: objects() >= 40, "the backfill to start")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        partial = braze_members(admin.profiles())
        assert 0 < len(partial) < len(expected), "killed after the backfill finished"
        # What the restart reads back: the values confirmed before the kill (an add
        # whose answer was not on record yet is pending, and sent again).
        confirmed = {
            key
            for key, entry in _acknowledged(kafka_bootstrap_servers, group).items()
            if entry is not None and not entry.pending
        }
        proc = _start(path, tmp_path / "second.log")
        _wait(lambda: not differences(expected, braze_members(admin.profiles())),
              "the restarted deliver to converge", timeout_s=120)  # fmt: skip
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, (tmp_path / "second.log").read_text()
    assert braze_members(admin.profiles()) == expected
    assert admin.report()["violations"] == []
    # Resumed from what was acknowledged, not started over: exactly the desired values
    # not confirmed before the kill were backfilled.
    desired = {(audience, c) for c, audiences in expected.items() for audience in audiences}
    assert confirmed and confirmed < desired
    summary = orjson.loads(out.decode().strip().splitlines()[-1])
    assert summary["backfilled"] == len(desired - confirmed)


def _owned(log: Path) -> list[set[int]]:
    """Every set of partitions a deliver reconciled on assignment, in order, from its
    log's "partitions 0,2: ..." lines."""
    sets = []
    for line in log.read_text(errors="replace").splitlines():
        _, found, rest = line.partition("partitions ")
        head = rest.split(":", 1)[0]
        if found and rest.count(":") and head.replace(",", "").isdigit():
            sets.append({int(p) for p in head.split(",")})
    return sets


def test_two_replicas_one_killed_mid_backfill_the_other_takes_over_and_converges(
    tmp_path: Path, kafka_bootstrap_servers: str, standins: StandInServer
) -> None:
    deltas: list[MembershipDelta] = synthetic_deltas(customers=400, events=8000, seed=21)
    topic, members_topic = _topics(kafka_bootstrap_servers, 4)
    produce_with_members(kafka_bootstrap_servers, topic, members_topic, 4, deltas)
    admin = StandInAdmin(standins.urls["braze"])
    admin.faults(strict=True)
    expected = expected_members(deltas)
    group = f"pair-{uuid.uuid4().hex[:8]}"
    # slow enough that the backfill is still going when one replica dies (217 profiles, 5
    # a request, 3 requests a second per replica: about 15 s for one alone); a short
    # session, so the group notices the death without waiting long
    path = _config(
        tmp_path / "c.yaml", kafka_bootstrap_servers, topic, standins.urls["braze"],
        group, max_objects_per_request=5, rate_limit={"limit": 3, "window_s": 1.0},
        consumer={"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
    )  # fmt: skip
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    first = _start(path, logs[0])
    procs = [first]
    try:
        _wait(lambda: _owned(logs[0]) == [{0, 1, 2, 3}], "the first replica's assignment")
        procs.append(_start(path, logs[1]))
        # the group splits the partitions between the two
        _wait(lambda: bool(_owned(logs[1])), "the second replica's assignment")
        _wait(lambda: _owned(logs[0])[-1] | _owned(logs[1])[-1] == {0, 1, 2, 3}
              and not _owned(logs[0])[-1] & _owned(logs[1])[-1],
              "a split of the partitions")  # fmt: skip
        killed = _owned(logs[0])[-1]
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        assert differences(expected, braze_members(admin.profiles())), "backfill already done"
        # the survivor is given the dead replica's partitions and finishes its backfill
        _wait(lambda: _owned(logs[1])[-1] == {0, 1, 2, 3}, "the rebalance", timeout_s=60)
        _wait(lambda: not differences(expected, braze_members(admin.profiles())),
              "the survivor to converge", timeout_s=180)  # fmt: skip
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.communicate(timeout=60)
    assert procs[1].returncode == 0, logs[1].read_text()
    assert killed, "the killed replica owned partitions"
    assert braze_members(admin.profiles()) == expected
    assert admin.report()["violations"] == []
    assert admin.report()["counters"].get("remove_never_added", 0) == 0


def _profiles(admin: StandInAdmin) -> dict[str, set[str]]:
    """Braze stand-in profile key (``external_id:…``, ``email:…``) -> its values, for every
    profile that holds any."""
    users = admin.profiles()["users"]
    found = {key: set(p.get("streamsync_audiences") or ()) for key, p in users.items()}
    return {key: values for key, values in found.items() if values}


def _current(deltas: list[MembershipDelta]) -> dict[tuple[str, str], MembershipDelta]:
    """(customer, audience) -> its latest delta, for the memberships that are current."""
    last = {(d.customer_id, d.audience): d for d in deltas}
    return {key: d for key, d in last.items() if d.op == "enter"}


def _by_identity(deltas: list[MembershipDelta], order: list[str]) -> dict[str, set[str]]:
    """What each Braze profile should hold: every current membership under the first
    identifier of ``order`` its latest enter carries (holdouts are not in these tests)."""
    out: dict[str, set[str]] = {}
    for (customer, audience), last in _current(deltas).items():
        ids = {"external_id": customer, "email": last.identifiers.get("email")}
        kind = next(k for k in order if ids[k])
        out.setdefault(f"{kind}:{ids[kind]}", set()).add(audience)
    return out


def test_an_identifier_change_moves_the_value_to_the_new_profile(
    tmp_path: Path, kafka_bootstrap_servers: str, standins: StandInServer
) -> None:
    # a quarter of the customers have no email yet: under [email, external_id] they are
    # known by external_id, the others by email
    no_email = lambda customer: zlib.crc32(customer.encode()) % 4 == 0  # noqa: E731
    deltas = [
        replace(d, identifiers={k: v for k, v in d.identifiers.items() if k != "email"})
        if no_email(d.customer_id) else d
        for d in synthetic_deltas(customers=150, events=4000, seed=31)
    ]  # fmt: skip
    topic, members_topic = _topics(kafka_bootstrap_servers, 2)
    produce_with_members(kafka_bootstrap_servers, topic, members_topic, 2, deltas)
    admin = StandInAdmin(standins.urls["braze"])
    admin.faults(strict=True)
    group = f"ids-{uuid.uuid4().hex[:8]}"

    def config(order: list[str]) -> Path:
        return _config(
            tmp_path / "c.yaml", kafka_bootstrap_servers, topic, standins.urls["braze"],
            group, identifiers={"order": order},
        )  # fmt: skip

    email_first = ["email", "external_id"]
    with _delivering(config(email_first)) as results:
        want = _by_identity(deltas, email_first)
        _wait(lambda: _profiles(admin) == want, "the profiles under email first")
        # in real time: a member known by external_id is given an email, so its value
        # leaves the external_id profile for the email one
        (customer, audience), last = next(
            (key, d) for key, d in sorted(_current(deltas).items()) if no_email(key[0])
        )
        email = f"{customer}@example.org"
        learnt = replace(last, identifiers={**last.identifiers, "email": email}, seq=10**6)
        produce_with_members(kafka_bootstrap_servers, topic, members_topic, 2, [learnt])
        deltas.append(learnt)
        want = _by_identity(deltas, email_first)
        assert audience in want[f"email:{email}"]
        assert audience not in want.get(f"external_id:{customer}", set())
        _wait(lambda: _profiles(admin) == want, "the real-time move")
    assert results[0].stats.moved[audience] == 1
    assert admin.report()["violations"] == []

    # at start-up: external_id now comes first, so every value on an email profile moves
    id_first = ["external_id", "email"]
    want = _by_identity(deltas, id_first)
    before = _by_identity(deltas, email_first)
    moving = sum(len(v) for key, v in before.items() if key.startswith("email:"))
    with _delivering(config(id_first)) as results:
        _wait(lambda: _profiles(admin) == want, "the profiles under external_id first")
    assert all(key.startswith("external_id:") for key in want)
    assert sum(results[0].stats.moved.values()) == moving > 0
    assert sum(results[0].stats.backfilled.values()) == moving
    assert admin.report()["violations"] == []
    assert admin.report()["counters"].get("remove_never_added", 0) == 0


def _holdout_values(deltas: list[MembershipDelta], mode: str) -> dict[str, set[str]]:
    """customer -> what its profile should hold with ``holdout: mode``: a holdout member
    nothing (skip) or ``<audience>__holdout`` (marker), from its latest delta."""
    out: dict[str, set[str]] = {}
    for (customer, audience), last in _current(deltas).items():
        if last.holdout and mode == "skip":
            continue
        out.setdefault(customer, set()).add(audience + "__holdout" if last.holdout else audience)
    return out


def test_switching_the_holdout_setting_moves_the_existing_values(
    tmp_path: Path, kafka_bootstrap_servers: str, standins: StandInServer
) -> None:
    held = lambda d: zlib.crc32(f"{d.audience}/{d.customer_id}".encode()) % 3 == 0  # noqa: E731
    deltas = [
        replace(d, holdout=True) if held(d) else d
        for d in synthetic_deltas(customers=150, events=4000, seed=37)
    ]
    topic, members_topic = _topics(kafka_bootstrap_servers, 2)
    produce_with_members(kafka_bootstrap_servers, topic, members_topic, 2, deltas)
    admin = StandInAdmin(standins.urls["braze"])
    admin.faults(strict=True)
    group = f"holdout-{uuid.uuid4().hex[:8]}"

    def config(mode: str) -> Path:
        return _config(
            tmp_path / "c.yaml", kafka_bootstrap_servers, topic, standins.urls["braze"],
            group, holdout=mode,
        )  # fmt: skip

    def profiles() -> dict[str, set[str]]:
        return braze_members(admin.profiles())

    def now_held(mode: str) -> MembershipDelta:
        """A member delivered as itself is made a holdout member in real time."""
        key, last = next(
            (k, d) for k, d in sorted(_current(deltas).items())
            if not d.holdout and not any(x.customer_id == k[0] and x.seq >= 10**6 for x in deltas)
        )  # fmt: skip
        later = replace(last, holdout=True, seq=10**6 + len(deltas))
        produce_with_members(kafka_bootstrap_servers, topic, members_topic, 2, [later])
        deltas.append(later)
        assert (key[1] + "__holdout" in _holdout_values(deltas, mode).get(key[0], set())) == (
            mode == "marker"
        )
        return later

    def holdouts() -> int:
        return sum(1 for d in _current(deltas).values() if d.holdout)

    with _delivering(config("marker")) as results:
        _wait(lambda: profiles() == _holdout_values(deltas, "marker"), "the markers")
        assert holdouts() > 0
        renamed = now_held("marker")  # its value becomes the marker, on the same profile
        _wait(lambda: profiles() == _holdout_values(deltas, "marker"), "the renamed value")
    assert results[0].stats.moved[renamed.audience] == 1
    assert admin.report()["violations"] == []

    # skip: every marker is removed from exactly the profiles it is on
    markers = holdouts()
    with _delivering(config("skip")) as results:
        _wait(lambda: profiles() == _holdout_values(deltas, "skip"), "no markers")
        dropped = now_held("skip")  # and in real time, a new holdout member loses its value
        _wait(lambda: profiles() == _holdout_values(deltas, "skip"), "the dropped value")
    skipped = results[0].stats
    assert sum(skipped.detached.values()) == markers
    exits = sum(n for (_, op), n in skipped.delivered.items() if op == "exit")
    assert exits == markers + 1  # the detached markers and the dropped value
    assert skipped.holdout_skipped[dropped.audience] >= 1
    assert admin.report()["violations"] == []

    # marker again: the markers are backfilled
    with _delivering(config("marker")) as results:
        _wait(lambda: profiles() == _holdout_values(deltas, "marker"), "the markers again")
    assert sum(results[0].stats.backfilled.values()) == holdouts()
    assert admin.report()["violations"] == []
    assert admin.report()["counters"].get("remove_never_added", 0) == 0
