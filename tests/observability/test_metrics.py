"""The Telemetry facade's instruments, read back by scraping the admin server's /metrics."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamsync.observability.admin import AdminServer
from streamsync.observability.metrics import LATENCY_BUCKETS_SECONDS, Telemetry
from tests.observability.scrape import get, scrape, value


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    t = Telemetry(role="evaluate")
    yield t
    t.shutdown()


@pytest.fixture
def admin(telemetry: Telemetry) -> Iterator[AdminServer]:
    with AdminServer(telemetry, host="127.0.0.1", port=0) as server:
        yield server


def test_ingest_counters_by_topic_and_reason(telemetry: Telemetry, admin: AdminServer) -> None:
    telemetry.records_ingested("cio.pipelines", 120)
    telemetry.records_ingested("cio.pipelines", 5)
    telemetry.records_ingested("cio.webhooks")
    telemetry.records_skipped("cio.pipelines", "no_customer_key", 3)
    telemetry.records_dead_lettered("cio.pipelines", "malformed_json", 2)
    telemetry.records_dead_lettered("cio.webhooks", "oversized")
    s = scrape(admin.url)
    assert value(s, "streamsync_records_ingested_total", topic="cio.pipelines") == 125
    assert value(s, "streamsync_records_ingested_total", topic="cio.webhooks") == 1
    skipped = "streamsync_records_skipped_total"
    assert value(s, skipped, topic="cio.pipelines", reason="no_customer_key") == 3
    dead = "streamsync_records_dead_lettered_total"
    assert value(s, dead, topic="cio.pipelines", reason="malformed_json") == 2
    assert value(s, dead, topic="cio.webhooks", reason="oversized") == 1
    assert value(s, dead, topic="cio.webhooks", reason="malformed_json") is None


def test_counters_accumulate_between_scrapes(telemetry: Telemetry, admin: AdminServer) -> None:
    telemetry.membership_changed("ACT__CartAbandon__90m", "enter", 4)
    first = scrape(admin.url)
    telemetry.membership_changed("ACT__CartAbandon__90m", "enter")
    telemetry.membership_changed("ACT__CartAbandon__90m", "exit", 2)
    second = scrape(admin.url)
    name = "streamsync_audience_changes_total"
    assert value(first, name, audience="ACT__CartAbandon__90m", op="enter") == 4
    assert value(second, name, audience="ACT__CartAbandon__90m", op="enter") == 5
    assert value(second, name, audience="ACT__CartAbandon__90m", op="exit") == 2


def test_gauges_report_the_latest_value_and_can_be_forgotten(
    telemetry: Telemetry, admin: AdminServer
) -> None:
    telemetry.set_consumer_lag("streamsync-evaluate", "cio.pipelines", 0, 10)
    telemetry.set_consumer_lag("streamsync-evaluate", "cio.pipelines", 0, 7)
    telemetry.set_consumer_lag("streamsync-evaluate", "cio.pipelines", 1, 3)
    telemetry.set_consumer_lag("streamsync-evaluate", "cio.webhooks", 1, 9)
    telemetry.set_audience_size("SUP__Winback", 1200, holdout_members=130)
    telemetry.set_stuck_members("SUP__Winback", 0)
    telemetry.set_restore_progress(1, restored=250, target=1000)
    s = scrape(admin.url)
    lag = "streamsync_consumer_lag"
    group = "streamsync-evaluate"
    assert value(s, lag, group=group, topic="cio.pipelines", partition="0") == 7
    assert value(s, lag, group=group, topic="cio.pipelines", partition="1") == 3
    assert value(s, lag, group=group, topic="cio.webhooks", partition="1") == 9
    assert value(s, "streamsync_audience_members", audience="SUP__Winback") == 1200
    assert value(s, "streamsync_audience_holdout_members", audience="SUP__Winback") == 130
    assert value(s, "streamsync_audience_stuck_members", audience="SUP__Winback") == 0
    assert value(s, "streamsync_state_restored_records", partition="1") == 250
    assert value(s, "streamsync_state_restore_target_records", partition="1") == 1000

    # Partition 1 is revoked: its lag and restore progress disappear, partition 0 stays.
    telemetry.forget_partition(1)
    telemetry.forget_audience("SUP__Winback")
    s = scrape(admin.url)
    assert value(s, lag, group=group, topic="cio.pipelines", partition="0") == 7
    assert value(s, lag, group=group, topic="cio.pipelines", partition="1") is None
    assert value(s, lag, group=group, topic="cio.webhooks", partition="1") is None
    assert value(s, "streamsync_state_restored_records", partition="1") is None
    assert value(s, "streamsync_audience_members", audience="SUP__Winback") is None


def test_forget_partition_of_one_topic(telemetry: Telemetry, admin: AdminServer) -> None:
    telemetry.set_consumer_lag("g", "a", 2, 1)
    telemetry.set_consumer_lag("g", "b", 2, 5)
    telemetry.forget_partition(2, topic="a")
    s = scrape(admin.url)
    assert value(s, "streamsync_consumer_lag", group="g", topic="a", partition="2") is None
    assert value(s, "streamsync_consumer_lag", group="g", topic="b", partition="2") == 5


def test_latency_histograms(telemetry: Telemetry, admin: AdminServer) -> None:
    for seconds in (0.02, 0.2, 0.2, 4.0):
        telemetry.observe_event_to_delta(seconds)
    telemetry.observe_delta_to_destination("braze", 0.3)
    telemetry.observe_delta_to_destination("moengage", 12.0)
    s = scrape(admin.url)
    name = "streamsync_event_to_delta_seconds"
    assert value(s, f"{name}_count") == 4
    assert value(s, f"{name}_sum") == pytest.approx(4.42)
    assert value(s, f"{name}_bucket", le="0.025") == 1
    assert value(s, f"{name}_bucket", le="0.25") == 3
    assert value(s, f"{name}_bucket", le="5.0") == 4
    assert value(s, f"{name}_bucket", le="+Inf") == 4
    buckets = {labels for (sample, labels) in s if sample == f"{name}_bucket"}
    assert len(buckets) == len(LATENCY_BUCKETS_SECONDS) + 1
    name = "streamsync_delta_to_destination_seconds"
    assert value(s, f"{name}_count", destination="braze") == 1
    assert value(s, f"{name}_bucket", destination="moengage", le="10.0") == 0
    assert value(s, f"{name}_bucket", destination="moengage", le="30.0") == 1


def test_destination_requests_retries_and_429s(telemetry: Telemetry, admin: AdminServer) -> None:
    for status in (201, 201, 429, 429, 429, 503, None):
        telemetry.destination_request("braze", status)
    telemetry.destination_request("moengage", 200)
    telemetry.destination_retry("braze", "429")
    telemetry.destination_retry("braze", "5xx")
    telemetry.destination_retry("braze", "429")
    telemetry.deltas_delivered("braze", 150)
    telemetry.deltas_rejected("braze", "invalid_attribute", 2)
    s = scrape(admin.url)
    requests = "streamsync_destination_requests_total"
    assert value(s, requests, destination="braze", status="201") == 2
    assert value(s, requests, destination="braze", status="429") == 3
    assert value(s, requests, destination="braze", status="503") == 1
    assert value(s, requests, destination="braze", status="error") == 1
    assert value(s, requests, destination="moengage", status="200") == 1
    assert value(s, "streamsync_destination_throttled_total", destination="braze") == 3
    assert value(s, "streamsync_destination_throttled_total", destination="moengage") is None
    retries = "streamsync_destination_retries_total"
    assert value(s, retries, destination="braze", reason="429") == 2
    assert value(s, retries, destination="braze", reason="5xx") == 1
    assert value(s, "streamsync_destination_delivered_total", destination="braze") == 150
    rejected = "streamsync_destination_rejected_total"
    assert value(s, rejected, destination="braze", reason="invalid_attribute") == 2


def test_identifier_match_rate(telemetry: Telemetry, admin: AdminServer) -> None:
    telemetry.identifier_lookup("braze", "SUP__Winback", matched=True, count=9)
    telemetry.identifier_lookup("braze", "SUP__Winback", matched=False)
    s = scrape(admin.url)
    name = "streamsync_identifier_lookups_total"
    matched = value(s, name, destination="braze", audience="SUP__Winback", result="matched")
    unmatched = value(s, name, destination="braze", audience="SUP__Winback", result="unmatched")
    assert matched is not None and unmatched is not None
    assert matched / (matched + unmatched) == pytest.approx(0.9)


def test_two_telemetry_objects_do_not_share_series(telemetry: Telemetry) -> None:
    other = Telemetry(role="deliver")
    try:
        telemetry.records_ingested("only-here", 3)
        with AdminServer(other, port=0) as server:
            s = scrape(server.url)
        assert value(s, "streamsync_records_ingested_total", topic="only-here") is None
        target = [labels for (name, labels) in s if name == "target_info"]
        assert target and ("streamsync_role", "deliver") in target[0]
    finally:
        other.shutdown()


def test_metric_types_are_what_prometheus_functions_expect(
    telemetry: Telemetry, admin: AdminServer
) -> None:
    """rate() needs counters, histogram_quantile() histograms: check the declared types."""
    telemetry.records_ingested("t")
    telemetry.destination_request("braze", 200)
    telemetry.set_audience_size("a", 1)
    telemetry.observe_event_to_delta(0.1)
    _, _, body = get(f"{admin.url}/metrics")
    types = {family.name: family.type for family in text_string_to_metric_families(body)}
    assert types["streamsync_records_ingested"] == "counter"
    assert types["streamsync_destination_requests"] == "counter"
    assert types["streamsync_audience_members"] == "gauge"
    assert types["streamsync_event_to_delta_seconds"] == "histogram"


def test_late_records_and_corrections(telemetry: Telemetry, admin: AdminServer) -> None:
    telemetry.records_late(3, 0)
    telemetry.records_late(1, 2)
    telemetry.membership_corrected("ACT__CartAbandon__90m", "exit", 2)
    s = scrape(admin.url)
    assert value(s, "streamsync_records_late_total", lateness="within") == 4
    assert value(s, "streamsync_records_late_total", lateness="beyond") == 2
    corrections = "streamsync_audience_corrections_total"
    assert value(s, corrections, audience="ACT__CartAbandon__90m", op="exit") == 2
    assert value(s, corrections, audience="ACT__CartAbandon__90m", op="enter") is None


def test_destination_size_and_excluded(telemetry: Telemetry, admin: AdminServer) -> None:
    telemetry.set_destination_members("braze", "SUP__Winback", "desired", 40)
    telemetry.set_destination_members("braze", "SUP__Winback", "acknowledged", 38)
    telemetry.deltas_excluded("braze", "SUP__Winback", 3)
    s = scrape(admin.url)
    members = "streamsync_destination_members"
    assert value(s, members, destination="braze", audience="SUP__Winback", state="desired") == 40
    assert value(s, members, destination="braze", audience="SUP__Winback",
                 state="acknowledged") == 38  # fmt: skip
    excluded = "streamsync_destination_excluded_total"
    assert value(s, excluded, destination="braze", audience="SUP__Winback") == 3
