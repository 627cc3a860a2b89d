"""The README's demo, small: real broker, three topic formats, dead letters, audiences,
and the live result equal to an offline replay of the same records."""

from __future__ import annotations

import io

import pytest

from streamsync.demo import print_report, run_demo

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

    print_report(result, out)
    text = out.getvalue()
    assert "Live deltas vs offline replay: identical" in text
    assert "[4/4]" in text
