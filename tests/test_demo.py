"""The README's demo, small: real broker, three topic formats, dead letters, audiences,
the live result equal to an offline replay of the same records, and delivery to both
stand-ins whose profiles hold what replay says."""

from __future__ import annotations

import io

import pytest

from streamsync.dev.demo import _check_standins, _demo_destinations, print_report, run_demo

pytestmark = pytest.mark.kafka


def test_demo_live_run_equals_replay(
    kafka_bootstrap_servers: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap_servers)
    out = io.StringIO()
    result = run_demo(customers=300, events=6_000, seed=7, bad_fraction=0.01, out=out)

    stats = result.ingest
    assert stats is not None
    assert stats.records == sum(result.produced.values())  # nothing lost
    assert stats.dead_lettered > 0
    assert result.dead_letters_read_back == stats.dead_lettered
    reasons = set(stats.dead_letters_by_reason)
    assert {"malformed_json", "oversized", "unknown_schema_id", "truncated_avro"} <= reasons
    assert stats.skipped_no_customer > 0
    assert len({d.audience for d in result.deltas}) >= 8
    assert result.matches_replay, "live deltas differ from the offline replay"

    # Both stand-ins received changes, hold exactly what replay says, and saw no request
    # over a documented limit.
    assert result.delivery is not None and set(result.delivery) == {"braze", "moengage"}
    for name, done in result.delivery.items():
        assert done.result.error is None, name
        # Each deliver starts after evaluate finished: the current members come from
        # the membership table (a backfill, one change per member value), and only
        # deltas written after that table read are consumed.
        backfilled = sum(done.result.stats.backfilled.values())
        assert done.result.consumed == 0, name
        assert backfilled == sum(len(v) for v in result.expected[name].values()), name
        assert done.result.stats.delivered_total > 0 and done.result.stats.requests > 0, name
        assert done.report["counters"]["requests"] >= done.result.stats.requests, name
        assert done.differences == [] and done.violations == [], name
        assert done.table_differences == [], name
        assert done.result.dead_letters == 0, name
        assert done.memberships == result.expected[name] and done.members > 0, name
    assert result.standins_match_replay and result.standins_match_table and result.passed
    assert len(result.table) == sum(len(v) for v in result.expected["braze"].values())

    print_report(result, out)
    text = out.getvalue()
    assert "Live deltas vs offline replay: identical" in text
    assert "Stand-in profiles vs offline replay: identical" in text
    assert "Stand-in profiles vs the membership table: identical" in text
    assert "[4/5] Delivering" in text and "[5/5]" in text
    assert "moengage:" in text and "braze:" in text  # per-destination progress

    # The final check notices a profile that lost a membership.
    braze = result.delivery["braze"]
    customer = next(iter(braze.memberships))
    braze.memberships[customer] = set(sorted(braze.memberships[customer])[1:])
    _check_standins(result, _demo_destinations("check"))
    assert braze.differences and braze.differences[0].startswith(customer)
    assert braze.table_differences and braze.table_differences[0].startswith(customer)
    assert not result.standins_match_replay and not result.standins_match_table
    assert not result.passed
    out = io.StringIO()
    print_report(result, out)
    assert "Stand-in profiles vs offline replay: DIFFERENT" in out.getvalue()
    assert f"braze: {customer}: missing" in out.getvalue()


def test_demo_without_delivery(
    kafka_bootstrap_servers: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap_servers)
    out = io.StringIO()
    result = run_demo(customers=50, events=500, seed=3, idle_timeout_s=1.0, deliver=False, out=out)
    assert result.delivery is None and result.matches_replay and result.passed
    print_report(result, out)
    text = out.getvalue()
    assert "[4/4] Replaying" in text and "stand-in" not in text.lower()
