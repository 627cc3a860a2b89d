"""Test cohorts and percentage rollout, on the real broker against the strict stand-in.

A destination's rollout grows from an allowlist to 10% to 100% and shrinks back: each
step ends with the stand-in's profiles equal to the desired state (replay's members the
rollout includes), the growth by backfill alone and the shrink by detach alone, and never
a remove of a value a profile did not have (strict mode: 0 violations).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from streamsync.audiences.engine import in_holdout
from streamsync.destinations.desired import DesiredFilter
from streamsync.destinations.rollout import Cohort, Rollout, rollout_bucket
from streamsync.dev.standins import StandInAdmin, StandInServer
from streamsync.dev.standins.compare import braze_members, expected_members
from tests.destinations.conftest import delta
from tests.destinations.helpers import produce_with_members, synthetic_deltas
from tests.destinations.test_reconcile import (
    SUBSCRIBED,
    WINBACK,
    _config,
    _delivering,
    _topics,
    _wait,
)


def test_the_rollout_hash_is_stable_monotonic_and_not_the_holdouts() -> None:
    customers = [f"c{i}" for i in range(20_000)]
    # a fixed value: the same on every replica, restart and Python process
    assert f"{rollout_bucket('customer-42'):.6f}" == "7.548887"
    ten = {c for c in customers if Rollout(percent=10).includes("A", c)}
    twenty = {c for c in customers if Rollout(percent=20).includes("A", c)}
    assert ten < twenty  # raising the percentage only adds customers
    assert 0.09 < len(ten) / len(customers) < 0.11
    # the same customers for every audience of the destination
    assert ten == {c for c in customers if Rollout(percent=10).includes("B", c)}
    # independent of the holdout: about 10% of the rollout's 10% are in a 10% holdout
    held = {c for c in customers if in_holdout("A", c, 10.0)}
    assert 0.07 < len(ten & held) / len(ten) < 0.13


def test_an_audience_cohort_narrows_the_destinations() -> None:
    rollout = Rollout(
        customers=frozenset({"t1"}), percent=0,
        audiences={"A": Cohort(customers=frozenset({"t2"}), percent=100)},
    )  # fmt: skip
    assert rollout.includes("A", "t1") and rollout.includes("B", "t1")
    assert not rollout.includes("A", "t2")  # the destination's cohort leaves it out
    narrow = Rollout(audiences={"A": Cohort(customers=frozenset({"t2"}), percent=0)})
    assert narrow.includes("A", "t2") and not narrow.includes("A", "t1")
    assert narrow.includes("B", "t1")
    want = DesiredFilter(None, "skip", narrow, detached=frozenset({"B"}))
    assert not want.routed("B") and want.routed("A")


@pytest.mark.parametrize(
    "settings",
    [{"percent": 101}, {"percent": -1}, {"audiences": {"A": {"customers": ["x"]}}},
     {"customers": [""], "percent": 0}, {"percentage": 10}],
)  # fmt: skip
def test_rollout_settings_are_strict(settings: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Rollout.model_validate(settings)


def _rolled(members: dict[str, set[str]], rollout: Rollout) -> dict[str, set[str]]:
    kept = {c: {a for a in values if rollout.includes(a, c)} for c, values in members.items()}
    return {c: values for c, values in kept.items() if values}


@pytest.mark.kafka
def test_growing_and_shrinking_a_rollout_reconciles_exactly(
    tmp_path: Path, kafka_bootstrap_servers: str, standins: StandInServer
) -> None:
    deltas = synthetic_deltas(customers=200, events=5000, seed=21)
    topic, members_topic = _topics(kafka_bootstrap_servers, 2)
    produce_with_members(kafka_bootstrap_servers, topic, members_topic, 2, deltas)
    admin = StandInAdmin(standins.urls["braze"])
    admin.faults(strict=True)
    group = f"rollout-{uuid.uuid4().hex[:8]}"
    everyone = expected_members(deltas)
    testers = sorted(everyone)[:4]

    def memberships(members: dict[str, set[str]]) -> int:
        return sum(len(v) for v in members.values())

    def step(settings: dict[str, Any]) -> tuple[dict[str, set[str]], Any]:
        rollout = Rollout.model_validate(settings)
        want = _rolled(everyone, rollout)
        path = _config(
            tmp_path / "c.yaml", kafka_bootstrap_servers, topic, standins.urls["braze"],
            group, audiences=[SUBSCRIBED, WINBACK],
            rollout=settings,
        )  # fmt: skip
        subset = {c: v & {SUBSCRIBED, WINBACK} for c, v in want.items()}
        subset = {c: v for c, v in subset.items() if v}
        with _delivering(path) as results:
            _wait(lambda: braze_members(admin.profiles()) == subset, f"rollout {settings}")
        assert admin.report()["violations"] == []
        return subset, results[0]

    cohort, _ = step({"customers": testers, "percent": 0})
    assert 0 < len(cohort) <= len(testers)
    ten, grown = step({"customers": testers, "percent": 10})
    assert sum(grown.stats.backfilled.values()) == memberships(ten) - memberships(cohort)
    assert sum(grown.stats.detached.values()) == 0
    assert len(cohort) < len(ten) < len(everyone)
    # one audience held back to the testers while the rest is at 100%
    full, _ = step({"percent": 100, "audiences": {WINBACK: {"customers": testers,
                                                             "percent": 0}}})  # fmt: skip
    everything, last = step({"percent": 100})
    assert sum(last.stats.detached.values()) == 0
    assert memberships(everything) > memberships(full)
    back, shrunk = step({"customers": testers, "percent": 0})
    assert back == cohort
    assert sum(shrunk.stats.detached.values()) == memberships(everything) - memberships(cohort)
    assert sum(shrunk.stats.backfilled.values()) == 0
    assert admin.report()["counters"].get("remove_never_added", 0) == 0


@pytest.mark.kafka
def test_real_time_enters_of_customers_left_out_are_not_sent(
    tmp_path: Path, kafka_bootstrap_servers: str, standins: StandInServer
) -> None:
    topic, members_topic = _topics(kafka_bootstrap_servers, 1)
    admin = StandInAdmin(standins.urls["braze"])
    admin.faults(strict=True)
    path = _config(
        tmp_path / "c.yaml", kafka_bootstrap_servers, topic, standins.urls["braze"],
        f"rt-{uuid.uuid4().hex[:8]}", rollout={"customers": ["tester"], "percent": 0},
    )  # fmt: skip
    with _delivering(path) as results:
        produce_with_members(
            kafka_bootstrap_servers, topic, members_topic, 1, [delta("tester", SUBSCRIBED, "enter")]
        )
        # on the profile: the loop reads the deltas from here on
        _wait(lambda: braze_members(admin.profiles()) == {"tester": {SUBSCRIBED}}, "the start")
        produce_with_members(
            kafka_bootstrap_servers, topic, members_topic, 1,
            [delta("outsider", WINBACK, "enter"), delta("outsider", WINBACK, "exit", seq=2),
             delta("other", WINBACK, "enter"), delta("tester", WINBACK, "enter")],
        )  # fmt: skip
        _wait(lambda: braze_members(admin.profiles()) == {"tester": {SUBSCRIBED, WINBACK}},
              "the tester")  # fmt: skip
    assert results[0].stats.excluded[WINBACK] == 2
    assert admin.report()["violations"] == []
    assert admin.report()["counters"].get("remove_never_added", 0) == 0
