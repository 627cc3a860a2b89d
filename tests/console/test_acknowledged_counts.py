"""The acknowledged counts the audience page shows are what a deliver run acknowledged:
a real broker, a real deliver loop backfilling the strict Braze stand-in, and the
console's reader of the ``<group>.acknowledged`` topic."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import pytest

from streamsync.config import load_config
from streamsync.console.acknowledged_counts import read_acknowledged
from streamsync.dev.standins import StandInAdmin, StandInServer
from streamsync.dev.standins.compare import braze_members, differences, expected_members
from tests.destinations.conftest import standins  # noqa: F401  (the stand-ins fixture)
from tests.destinations.helpers import produce_with_members, synthetic_deltas
from tests.destinations.test_reconcile import _acknowledged, _config, _delivering, _topics, _wait

pytestmark = pytest.mark.kafka


def test_the_counts_are_what_deliver_acknowledged(
    tmp_path: Path,
    kafka_bootstrap_servers: str,
    standins: StandInServer,  # noqa: F811
) -> None:
    deltas = synthetic_deltas(customers=120, events=3000, seed=8)
    topic, members_topic = _topics(kafka_bootstrap_servers, 3)
    produce_with_members(kafka_bootstrap_servers, topic, members_topic, 3, deltas)
    admin = StandInAdmin(standins.urls["braze"])
    group = f"console-acked-{uuid.uuid4().hex[:8]}"
    path = _config(
        tmp_path / "c.yaml", kafka_bootstrap_servers, topic, standins.urls["braze"], group
    )
    config = load_config(path, env={})
    before = read_acknowledged(config, "braze", timeout_s=30)
    assert not before.exists  # deliver has not started: nothing acknowledged yet
    expected = expected_members(deltas)
    with _delivering(path):
        _wait(
            lambda: not differences(expected, braze_members(admin.profiles())),
            "the backfill to match replay",
        )
    counts = read_acknowledged(config, "braze", timeout_s=30)
    assert counts.exists and counts.complete and counts.undecodable == 0
    recorded = _acknowledged(kafka_bootstrap_servers, group)
    confirmed = Counter(
        audience
        for (audience, _), entry in recorded.items()
        if entry is not None and not entry.pending and not entry.holdout
    )
    assert counts.acknowledged == confirmed
    assert not counts.pending
    # and that is what the destination holds
    held = Counter(a for values in expected.values() for a in values)
    assert counts.acknowledged == held
    assert sum(held.values()) > 0
