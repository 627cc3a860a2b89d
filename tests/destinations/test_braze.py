"""Braze delivery through the sink against the Braze stand-in (real HTTP, no Kafka)."""

from __future__ import annotations

import logging
import time

import orjson
import pytest

from streamsync.destinations.braze import CoercionError, coerce
from streamsync.destinations.errors import FatalDestinationError
from streamsync.dev.standins import BrazeStandIn, StandInServer
from tests.destinations.conftest import BRAZE_KEY, braze_client, delta, harness


def _members(h, customer: str) -> list[str]:  # type: ignore[no-untyped-def]
    users = h.admin.profiles()["users"]
    return users.get(f"external_id:{customer}", {}).get("streamsync_audiences", [])


def test_batches_fill_to_75_objects_and_collapse_to_net_effect(standins: StandInServer) -> None:
    h = harness(braze_client(standins.urls["braze"]), standins.urls["braze"])
    for i in range(300):
        h.add(delta(f"c{i}", "ACT__A", "enter"))
    h.add(delta("c0", "ACT__A", "exit", seq=2))  # collapses with c0's enter
    h.drain()
    standin = standins.standins["braze"]
    # c0's net change is an exit of a value never acknowledged: nothing is sent for it,
    # so no remove of a never-added value and no profile created by one
    assert standin.objects_per_request == [75, 75, 75, 74]  # type: ignore[attr-defined]
    assert "external_id:c0" not in h.admin.profiles()["users"]
    assert _members(h, "c1") == ["ACT__A"]
    assert h.sink.stats.collapsed == 1 and h.sink.stats.unchanged == 1
    assert h.offsets.position(0) == 301  # everything acknowledged
    assert h.admin.report()["violations"] == []


def test_exit_never_overtakes_its_enter_across_retries(standins: StandInServer) -> None:
    h = harness(braze_client(standins.urls["braze"]), standins.urls["braze"])
    h.admin.faults(status_burst={"count": 3, "status": 502})
    h.add(delta("c1", "ACT__A", "enter"))
    h.sink.pump(force=True)  # the enter is in flight and failing
    assert h.sink.failing and h.sink.backpressure
    h.add(delta("c1", "ACT__A", "exit", seq=2))  # waits behind it, not collapsed into it
    h.drain()
    assert _members(h, "c1") == []
    assert [len(batch) for batch in h.acked] == [1, 1]
    assert h.sink.stats.retries == 3


def test_partial_errors_are_mapped_back_to_their_deltas(standins: StandInServer) -> None:
    client = braze_client(
        standins.urls["braze"], audience_options={"ACT__A": {"enter_event": "entered_a"}}
    )
    h = harness(client, standins.urls["braze"])
    h.admin.faults(reject_ids=["bad"])
    for customer in ("ok1", "bad", "ok2"):
        h.add(delta(customer, "ACT__A", "enter"))
    h.drain()
    assert [(d.customer_id, reason) for d, reason, _ in h.dead.records] == [("bad", "rejected")]
    assert h.dead.records[0][2].status == 201 and "Invalid" in h.dead.records[0][2].message
    profiles = h.admin.profiles()
    assert set(profiles["users"]) == {"external_id:ok1", "external_id:ok2"}
    assert [e["name"] for e in profiles["events"]["external_id:ok1"]] == ["entered_a"]
    assert h.offsets.position(0) == 3


def test_429_reset_is_obeyed(standins: StandInServer) -> None:
    h = harness(braze_client(standins.urls["braze"]), standins.urls["braze"])
    h.admin.faults(storm_s=1.2)
    h.add(delta("c1", "ACT__A", "enter"))
    h.drain()
    report = h.admin.report()
    assert report["counters"]["rate_limited_storm"] == 1  # one 429, then wait for the reset
    assert report["violations"] == []
    assert _members(h, "c1") == ["ACT__A"]


def test_limiter_keeps_under_the_limit_without_429s(standins: StandInServer) -> None:
    client = braze_client(standins.urls["braze"], max_objects_per_request=1)
    h = harness(client, standins.urls["braze"])
    for i in range(120):  # one customer per request: 120 requests at a limit of 50/s
        h.add(delta(f"c{i}", "ACT__A", "enter"))
    h.drain()
    counters = h.admin.report()["counters"]
    assert counters.get("rate_limited", 0) == 0 and counters["requests"] == 120


def test_identifier_fallback_and_unmatched(standins: StandInServer) -> None:
    client = braze_client(standins.urls["braze"], identifiers={"order": ["email", "phone"]})
    h = harness(client, standins.urls["braze"])
    h.add(delta("c1", "ACT__A", "enter", identifiers={"email": "a@example.com"}))
    h.add(delta("c2", "ACT__A", "enter", identifiers={"phone": "+15550001"}))
    h.add(delta("c3", "ACT__A", "enter"))
    h.drain()
    assert set(h.admin.profiles()["users"]) == {"email:a@example.com", "phone:+15550001"}
    assert [(d.customer_id, reason) for d, reason, _ in h.dead.records] == [("c3", "unmatched")]
    assert h.sink.stats.match_rate("ACT__A") == pytest.approx(2 / 3)


def test_only_streamsync_values_are_removed_from_a_shared_attribute(
    standins: StandInServer,
) -> None:
    standin = standins.standins["braze"]
    standin.users["external_id:c1"] = {"streamsync_audiences": ["manual"]}  # type: ignore[attr-defined]
    h = harness(braze_client(standins.urls["braze"]), standins.urls["braze"])
    h.add(delta("c1", "ACT__A", "enter"))
    h.drain()
    assert _members(h, "c1") == ["manual", "ACT__A"]
    h.add(delta("c1", "ACT__A", "exit", seq=2))
    h.drain()
    assert _members(h, "c1") == ["manual"]


def test_a_remove_is_sent_only_for_what_was_acknowledged(standins: StandInServer) -> None:
    standin = standins.standins["braze"]
    standin.users["external_id:c1"] = {"streamsync_audiences": ["manual", "ACT__A"]}  # type: ignore[attr-defined]
    h = harness(braze_client(standins.urls["braze"]), standins.urls["braze"])
    h.add(delta("c1", "ACT__A", "exit"))  # streamsync never added ACT__A here
    h.add(delta("c2", "ACT__A", "exit"))
    h.drain()
    assert _members(h, "c1") == ["manual", "ACT__A"]
    assert "external_id:c2" not in h.admin.profiles()["users"]
    assert h.admin.report()["counters"].get("requests", 0) == 0
    assert h.sink.stats.unchanged == 2 and h.offsets.position(0) == 2


def test_holdout_skip_and_marker(standins: StandInServer) -> None:
    h = harness(braze_client(standins.urls["braze"]), standins.urls["braze"])
    h.add(delta("c1", "ACT__A", "enter", holdout=True))
    h.drain()
    assert h.admin.profiles()["users"] == {} and h.sink.stats.holdout_skipped["ACT__A"] == 1
    h = harness(braze_client(standins.urls["braze"]), standins.urls["braze"], holdout="marker")
    h.add(delta("c1", "ACT__A", "enter", holdout=True))
    h.drain()
    assert _members(h, "c1") == ["ACT__A__holdout"]


def test_paused_audience_waits_and_resume_drains(standins: StandInServer) -> None:
    h = harness(braze_client(standins.urls["braze"]), standins.urls["braze"])
    h.sink.paused_audiences = frozenset({"ACT__A"})
    h.add(delta("c1", "ACT__A", "enter"))
    h.add(delta("c1", "ACT__B", "enter"))
    for _ in range(5):
        h.sink.pump(force=True)
    assert _members(h, "c1") == ["ACT__B"]
    assert h.offsets.position(0) == 0  # the held delta keeps the commit position
    h.sink.paused_audiences = frozenset()
    h.drain()
    assert sorted(_members(h, "c1")) == ["ACT__A", "ACT__B"]
    assert h.offsets.position(0) == 2


def test_dry_run_logs_requests_with_the_key_redacted(
    standins: StandInServer, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness(braze_client(standins.urls["braze"]), standins.urls["braze"], dry_run=True)
    h.add(delta("c1", "ACT__A", "enter"))
    with caplog.at_level(logging.INFO, logger="streamsync.deliver"):
        h.drain()
    assert h.admin.report()["counters"].get("requests", 0) == 0
    text = caplog.text
    assert "/users/track" in text and '"external_id":"c1"' in text
    assert "unit-braze-key" not in text and "**********" in text
    # Nothing was sent, so nothing was delivered: the summary says what would have been.
    summary = h.sink.stats.as_dict()
    assert (summary["delivered"], summary["requests"]) == (0, 0)
    assert (summary["would_deliver"], summary["dry_run_requests"]) == (1, 1)


def test_wrong_key_is_fatal(standins: StandInServer) -> None:
    h = harness(braze_client(standins.urls["braze"], key="wrong"), standins.urls["braze"])
    h.add(delta("c1", "ACT__A", "enter"))
    with pytest.raises(FatalDestinationError, match="401"):
        h.drain()
    assert h.offsets.position(0) == 0


def test_boolean_attribute_and_typed_ride_along(standins: StandInServer) -> None:
    client = braze_client(
        standins.urls["braze"],
        array_attribute=None,
        audience_options={"ACT__A": {"boolean_attribute": "in_a"}},
        attributes=[
            {"attribute": "ss_seq", "type": "integer", "source": "seq"},
            {"attribute": "ss_flag", "type": "boolean", "value": "true"},
        ],
    )
    h = harness(client, standins.urls["braze"])
    h.add(delta("c1", "ACT__A", "enter", seq=7))
    h.drain()
    profile = h.admin.profiles()["users"]["external_id:c1"]
    assert profile == {"in_a": True, "ss_seq": 7, "ss_flag": True}
    body = orjson.loads(client.plan(h.acked[0])[0].body)
    assert body["attributes"][0]["_update_existing_only"] is False


def test_coercion_refuses_values_that_do_not_fit() -> None:
    assert coerce("TRUE", "boolean") is True
    assert coerce(5, "string") == "5"
    for value, kind in (("yes", "boolean"), (1, "boolean"), (True, "integer"), ("x", "float")):
        with pytest.raises(CoercionError):
            coerce(value, kind)


def test_partner_cohort_mode(
    standins: StandInServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = standins.urls["braze"]
    settings = {
        "mode": "cohorts",
        "cohorts": {"partner_name": "streamsync", "partner_key": {"env": "PARTNER_KEY"},
                    "cohort_ids": {"ACT__A": "cohort-a"}},
        "identifiers": {"order": ["external_id", "user_alias"]},
    }  # fmt: skip
    monkeypatch.setenv("PARTNER_KEY", "dev-braze-partner-key")
    client = braze_client(url, key="dev-braze-data-import-key", **settings)
    h = harness(client, url)
    for i in range(1500):
        h.add(delta(f"c{i}", "ACT__A", "enter"))
    h.add(delta("anon", "ACT__A", "enter", id_kind="cio_id"))  # no external_id: alias
    h.drain()
    h.add(delta("c0", "ACT__A", "exit", seq=2))
    h.drain()
    cohort = h.admin.profiles()["cohorts"]["cohort-a"]
    assert cohort["name"] == "ACT__A" and len(cohort["members"]) == 1500
    assert "external_id:c0" not in cohort["members"]
    assert "user_alias:cio_id:anon" in cohort["members"]
    assert h.admin.report()["violations"] == []  # 1,000 ids per request at most
    dry = harness(braze_client(url, key="dev-braze-data-import-key", **settings), url,
                  dry_run=True)  # fmt: skip
    dry.add(delta("c1", "ACT__A", "enter"))
    with caplog.at_level(logging.INFO, logger="streamsync.deliver"):
        dry.drain()
    assert "/partners/streamsync/cohorts" in caplog.text
    assert "dev-braze-partner-key" not in caplog.text and "data-import-key" not in caplog.text


def test_remaining_zero_waits_for_the_reset_instead_of_a_429() -> None:
    # The workspace allows 5 requests per second but the client was told 50 (another
    # integration shares the workspace, say): X-RateLimit-Remaining: 0 makes it wait.
    with StandInServer({"braze": BrazeStandIn(BRAZE_KEY, limit=5, window_s=1.0)}) as server:
        url = server.urls["braze"]
        h = harness(braze_client(url, max_objects_per_request=1), url)
        for i in range(12):
            h.add(delta(f"c{i}", "ACT__A", "enter"))
        h.drain()
        counters = h.admin.report()["counters"]
        assert counters["requests"] == 12 and counters.get("rate_limited", 0) == 0


def test_timeouts_are_retried_and_the_write_stays_idempotent(standins: StandInServer) -> None:
    url = standins.urls["braze"]
    h = harness(braze_client(url), url, timeout_s=0.3)
    h.admin.faults(slow={"count": 2, "ms": 700})  # answered after the client gave up
    h.add(delta("c1", "ACT__A", "enter"))
    h.drain()
    assert h.sink.stats.retries == 2
    assert _members(h, "c1") == ["ACT__A"]


def test_a_later_delta_without_the_identifier_still_replaces_the_buffered_change(
    standins: StandInServer,
) -> None:
    client = braze_client(standins.urls["braze"], identifiers={"order": ["email"]})
    h = harness(client, standins.urls["braze"])
    h.add(delta("c1", "ACT__A", "enter", identifiers={"email": "a@example.com"}))
    h.add(delta("c1", "ACT__A", "exit", seq=2))  # no email on this one
    h.drain()
    assert h.dead.records == []
    assert (
        h.admin.profiles()["users"].get("email:a@example.com", {}).get("streamsync_audiences", [])
        == []
    )


@pytest.mark.parametrize("update_existing_only", [False, True])
def test_user_alias_and_update_existing_only(
    standins: StandInServer, update_existing_only: bool
) -> None:
    client = braze_client(
        standins.urls["braze"],
        identifiers={"order": ["user_alias"], "alias_label": "cio_id", "alias_source": "cio_id"},
        update_existing_only=update_existing_only,
    )
    h = harness(client, standins.urls["braze"])
    h.add(delta("c1", "ACT__A", "enter", identifiers={"cio_id": "d9c1"}))
    h.drain()
    users = h.admin.profiles()["users"]
    # Braze creates an alias-only profile only when told _update_existing_only: false
    assert users == ({} if update_existing_only else
                     {"user_alias:cio_id:d9c1": {"streamsync_audiences": ["ACT__A"]}})  # fmt: skip
    assert h.offsets.position(0) == 1


def test_the_sink_reports_to_the_process_telemetry(standins: StandInServer) -> None:
    from streamsync.observability.metrics import Telemetry

    telemetry = Telemetry(role="deliver")
    try:
        client = braze_client(standins.urls["braze"], identifiers={"order": ["email"]})
        h = harness(client, standins.urls["braze"], observer=telemetry)
        h.admin.faults(status_burst={"count": 1, "status": 503})
        h.sink.add(delta("c1", "ACT__A", "enter", identifiers={"email": "a@x"}), 0, 0,
                   int(time.time() * 1000))  # fmt: skip
        h.sink.add(delta("c2", "ACT__A", "enter"), 0, 1)  # unmatched
        h.drain()
        text = telemetry.render().decode()
    finally:
        telemetry.shutdown()
    assert 'destination="braze",status="503"' in text
    assert 'destination="braze",status="201"' in text
    assert 'reason="server_error"' in text and 'reason="unmatched"' in text
    assert "streamsync_destination_delivered" in text
    assert "streamsync_delta_to_destination" in text


def test_a_refused_move_keeps_the_value_where_it_was_acknowledged(
    standins: StandInServer,
) -> None:
    client = braze_client(standins.urls["braze"], identifiers={"order": ["email", "external_id"]})
    h = harness(client, standins.urls["braze"])
    h.admin.faults(strict=True)
    h.add(delta("c1", "ACT__A", "enter"))  # no email yet: known by external_id
    h.drain()
    assert _members(h, "c1") == ["ACT__A"]
    # the member is given an email, but the old profile refuses the remove: the value
    # stays on the profile on record, nothing is added elsewhere, the offset is released
    h.admin.faults(strict=True, reject_ids=["c1"])
    h.add(delta("c1", "ACT__A", "enter", seq=2, identifiers={"email": "c1@example.com"}))
    h.drain()
    assert _members(h, "c1") == ["ACT__A"]
    assert "email:c1@example.com" not in h.admin.profiles()["users"]
    assert h.sink.stats.moved["ACT__A"] == 0 and h.sink.stats.rejected["ACT__A"] == 1
    assert h.offsets.position(0) == 2
    entry = h.sink.acknowledged.get(0, "ACT__A", "c1")
    assert entry is not None and list(entry.identity) == ["external_id", "c1"]
    # accepted again: the next enter moves it
    h.admin.faults(strict=True, reject_ids=[])
    h.add(delta("c1", "ACT__A", "enter", seq=3, identifiers={"email": "c1@example.com"}))
    h.drain()
    assert _members(h, "c1") == []
    users = h.admin.profiles()["users"]
    assert users["email:c1@example.com"]["streamsync_audiences"] == ["ACT__A"]
    assert h.sink.stats.moved["ACT__A"] == 1 and h.offsets.position(0) == 3
    assert h.admin.report()["violations"] == []
