"""MoEngage delivery through the sink against the MoEngage stand-in."""

from __future__ import annotations

import base64

import orjson

from streamsync.dev.standins import StandInServer
from tests.destinations.conftest import MOE_APP, MOE_KEY, delta, harness, moe_client


def test_bulk_import_never_adds_and_removes_one_attribute_in_a_call(
    standins: StandInServer,
) -> None:
    url = standins.urls["moengage"]
    h = harness(moe_client(url), url)
    h.add(delta("c1", "ACT__A", "enter"))
    h.add(delta("c2", "ACT__A", "enter"))
    h.drain()
    h.add(delta("c1", "ACT__A", "exit", seq=2))
    h.add(delta("c1", "ACT__B", "enter"))
    h.add(delta("c2", "ACT__B", "enter"))
    h.drain()
    users = h.admin.profiles()["users"]
    assert users["c1"]["streamsync_audiences"] == ["ACT__B"]
    assert users["c2"]["streamsync_audiences"] == ["ACT__A", "ACT__B"]
    assert h.admin.report()["violations"] == []
    assert h.sink.stats.requests == 3  # c1's removal went in a second call


def test_bulk_import_requests_stay_under_the_body_limit(standins: StandInServer) -> None:
    url = standins.urls["moengage"]
    client = moe_client(url, max_body_bytes=4096)
    changes_requests = []
    h = harness(client, url)
    for i in range(100):
        h.add(delta(f"customer-{i:04d}", "ACT__A_rather_long_audience_name_for_size", "enter"))
    h.drain()
    assert len(h.admin.profiles()["users"]) == 100
    assert h.sink.stats.requests > 1
    for batch in h.acked:
        for request in client.plan(batch):
            changes_requests.append(len(request.body))
    assert max(changes_requests) <= 4096
    assert h.admin.report()["violations"] == []


def test_bulk_import_200_body_errors_are_dead_lettered(standins: StandInServer) -> None:
    url = standins.urls["moengage"]
    h = harness(moe_client(url), url)
    h.admin.faults(reject_ids=["c2"])
    for customer in ("c1", "c2", "c3"):
        h.add(delta(customer, "ACT__A", "enter"))
    h.drain()
    assert set(h.admin.profiles()["users"]) == {"c1", "c3"}
    [(dead, reason, rejection)] = h.dead.records
    assert (dead.customer_id, reason, rejection.status) == ("c2", "rejected", 200)
    assert "refused" in rejection.message and rejection.request_id


def test_track_user_refusal_is_isolated_by_splitting(standins: StandInServer) -> None:
    url = standins.urls["moengage"]
    h = harness(moe_client(url, mode="track_user", boolean_attributes={"ACT__A": "in_a"}), url)
    h.admin.faults(reject_ids=["c2"])
    h.add(delta("c1", "ACT__A", "enter"))
    h.add(delta("c2", "ACT__A", "enter"))
    h.add(delta("c2", "ACT__B", "enter"))
    h.add(delta("unknown", "ACT__B", "enter"))  # refused before sending (documented list)
    h.drain()
    users = h.admin.profiles()["users"]
    assert users == {"c1": {"in_a": True, "streamsync_audiences": ["ACT__A"]}}
    refused = sorted((d.customer_id, d.audience, r.status) for d, _, r in h.dead.records)
    assert refused == [("c2", "ACT__A", 400), ("c2", "ACT__B", 400), ("unknown", "ACT__B", 0)]
    assert h.sink.stats.splits == 1


def test_cohort_sync_adds_and_removes_existing_users(standins: StandInServer) -> None:
    url = standins.urls["moengage"]
    standin = standins.standins["moengage"]
    standin.users.update({"c1": {}, "c2": {}})  # type: ignore[attr-defined]
    client = moe_client(url, mode="cohort_sync", cohort_ids={"ACT__A": "cohort-a"})
    h = harness(client, url)
    h.add(delta("c1", "ACT__A", "enter"))
    h.add(delta("c2", "ACT__A", "enter"))
    h.drain()
    h.add(delta("c1", "ACT__A", "exit", seq=2))
    h.drain()
    assert h.admin.profiles()["cohorts"] == {"cohort-a": ["c2"]}
    body = orjson.loads(client.plan(h.acked[0])[0].body)
    assert body["action"] == "add_members" and body["parameters"]["cohort_name"] == ".ACT__A"


def test_auth_headers() -> None:
    client = moe_client("http://127.0.0.1:1")
    assert client.plan([]) == []
    headers = client._headers  # type: ignore[attr-defined]
    assert headers["MOE-APPKEY"] == MOE_APP
    assert base64.b64decode(headers["Authorization"].split()[1]).decode() == f"{MOE_APP}:{MOE_KEY}"
    assert MOE_KEY not in str(client.redacted_headers(headers))


def test_rate_limit_reset_is_seconds_left(standins: StandInServer) -> None:
    url = standins.urls["moengage"]
    h = harness(moe_client(url), url)
    h.admin.faults(storm_s=1.0)
    h.add(delta("c1", "ACT__A", "enter"))
    h.drain()
    report = h.admin.report()
    assert report["counters"]["rate_limited_storm"] == 1 and report["violations"] == []


def test_a_new_identifier_moves_the_value_to_its_profile(standins: StandInServer) -> None:
    url = standins.urls["moengage"]
    h = harness(moe_client(url, identifiers=["email", "customer_id"]), url)
    h.admin.faults(strict=True)
    h.add(delta("c1", "ACT__A", "enter"))  # no email yet: uid c1
    h.add(delta("c1", "ACT__B", "enter"))
    h.drain()
    # c1 is given an email: ACT__A's enter moves it; ACT__B stays until its own delta
    h.add(delta("c1", "ACT__A", "enter", seq=2, identifiers={"email": "c1@example.com"}))
    h.drain()
    users = h.admin.profiles()["users"]
    assert users["c1"]["streamsync_audiences"] == ["ACT__B"]
    assert users["c1@example.com"]["streamsync_audiences"] == ["ACT__A"]
    assert h.sink.stats.moved["ACT__A"] == 1 and h.offsets.position(0) == 3
    assert h.admin.report()["violations"] == []
