"""The stand-ins themselves: they must catch what delivery is tested against (limits,
requests before a 429's reset, auth), or the end-to-end assertions could not fail."""

from __future__ import annotations

import base64
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from streamsync.deltas.record import MembershipDelta
from streamsync.dev.standins import BrazeStandIn, MoEngageStandIn, StandInAdmin, StandInServer
from streamsync.dev.standins.compare import differences, expected_members

APP, KEY = "APP1", "moe-key"
MOE_AUTH = {
    "Authorization": "Basic " + base64.b64encode(f"{APP}:{KEY}".encode()).decode(),
    "MOE-APPKEY": APP,
    "Content-Type": "application/json",
}
BRAZE_AUTH = {"Authorization": "Bearer braze-key", "Content-Type": "application/json"}


@pytest.fixture
def server() -> Iterator[StandInServer]:
    with StandInServer(
        {"braze": BrazeStandIn("braze-key", limit=3, window_s=2.0),
         "moengage": MoEngageStandIn(APP, KEY, user_limit=5, window_s=60.0)}
    ) as s:  # fmt: skip
        yield s


def post(url: str, body: Any, headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            return response.status, headers, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        headers = {k.lower(): v for k, v in error.headers.items()}
        return error.code, headers, orjson.loads(error.read())


def test_braze_limits_auth_and_reset_violations(server: StandInServer) -> None:
    url = server.urls["braze"] + "/users/track"
    admin = StandInAdmin(server.urls["braze"])
    assert post(url, {}, {**BRAZE_AUTH, "Authorization": "Bearer wrong"})[0] == 401
    too_many = {"attributes": [{"external_id": str(i)} for i in range(76)]}
    status, _, body = post(url, too_many, BRAZE_AUTH)
    assert (status, body["message"]) == (400, "Max Input Length Exceeded")
    assert [v["kind"] for v in admin.report()["violations"]] == ["over_limit"]
    one = {"attributes": [{"external_id": "a"}]}
    while True:  # 3 per 2-second window: a 429 comes within 4 requests
        status, headers, _ = post(url, one, BRAZE_AUTH)
        if status == 429:
            reset = int(headers["x-ratelimit-reset"])  # epoch seconds
            if reset - time.time() > 0.3:  # room to send once more before it
                break
    assert headers["x-ratelimit-remaining"] == "0"
    post(url, one, BRAZE_AUTH)  # before the reset
    assert [v["kind"] for v in admin.report()["violations"]][-1] == "before_reset"
    violations = len(admin.report()["violations"])
    time.sleep(max(0.0, reset - time.time()) + 0.05)
    assert post(url, one, BRAZE_AUTH)[0] == 201
    assert len(admin.report()["violations"]) == violations


def test_braze_array_semantics_and_partial_errors(server: StandInServer) -> None:
    url = server.urls["braze"] + "/users/track"
    body = {
        "attributes": [
            {"external_id": "a", "arr": {"add": ["x", "y"]}},
            {"arr": {"add": ["z"]}},
            {"external_id": "a", "arr": {"add": ["x"], "remove": ["y"]}, "flag": True},
        ]
    }
    status, _, answer = post(url, body, BRAZE_AUTH)
    assert status == 201 and answer["attributes_processed"] == 2
    assert answer["errors"][0]["index"] == 1 and answer["errors"][0]["input_array"] == "attributes"
    users = StandInAdmin(server.urls["braze"]).profiles()["users"]
    assert users == {"external_id:a": {"arr": ["x"], "flag": True}}


def test_moengage_auth_limits_and_array_rule(server: StandInServer) -> None:
    base = server.urls["moengage"]
    admin = StandInAdmin(base)
    element = {"type": "customer", "customer_id": "u1", "attributes": {}}
    assert post(f"{base}/v1/customer/{APP}", element, {**MOE_AUTH, "MOE-APPKEY": "x"})[0] == 409
    wrong = {**MOE_AUTH, "Authorization": "Basic " + base64.b64encode(b"APP1:no").decode()}
    assert post(f"{base}/v1/customer/{APP}", element, wrong)[0] == 401
    big = {"type": "transition", "elements": [element], "pad": "x" * (100 * 1024)}
    status, _, body = post(f"{base}/v1/transition/{APP}", big, MOE_AUTH)
    assert (status, body["error"]["type"]) == (413, "PayloadTooLarge")
    both = {**element, "attributes": {"addValueToArrayField": {"a": ["1"]},
                                      "removeValueFromArrayField": {"a": ["2"]}}}  # fmt: skip
    status, _, body = post(f"{base}/v1/customer/{APP}", both, MOE_AUTH)
    assert (status, body["error"]["type"]) == (400, "ArrayFieldError")
    assert [v["kind"] for v in admin.report()["violations"]] == [
        "over_limit",
        "array_add_and_remove",
    ]
    bulk = {"type": "transition", "elements": [element, {**element, "customer_id": "null"}]}
    status, headers, body = post(f"{base}/v1/transition/{APP}", bulk, MOE_AUTH)
    assert status == 200 and body["errors"] == [
        {"index": 1, "type": "Blacklisted", "message": "customer_id is missing or not allowed"}
    ]
    assert 0 < int(headers["x-ratelimit-reset"]) <= 60  # seconds left, not an epoch
    assert headers["x-ratelimit-remaining"] == "2"  # 5 users a minute: 1 + 2 used
    assert post(f"{base}/v1/transition/{APP}", bulk, MOE_AUTH)[0] == 200
    status, headers, body = post(f"{base}/v1/transition/{APP}", bulk, MOE_AUTH)  # 5 + 2 > 5
    assert status == 429 and body["error"]["type"] == "RateLimitError"


def test_compare_folds_deltas_like_a_destination() -> None:
    def d(customer: str, audience: str, op: str, seq: int, holdout: bool = False) -> Any:
        return MembershipDelta(audience, 1, customer, op, seq, seq, holdout=holdout)  # type: ignore[arg-type]

    deltas = [d("a", "A", "enter", 1), d("a", "A", "exit", 2), d("a", "B", "enter", 1),
              d("b", "A", "enter", 1, holdout=True)]  # fmt: skip
    assert expected_members(deltas) == {"a": {"B"}}
    assert expected_members(deltas, holdout="marker") == {"a": {"B"}, "b": {"A__holdout"}}
    assert differences({"a": {"B"}}, {"a": {"B"}}) == []
    assert differences({"a": {"B"}}, {"a": {"A"}}) == ["a: missing ['B'], unexpected ['A']"]


def test_braze_update_only_for_unknown_users_answers_as_documented(server: StandInServer) -> None:
    """braze.com/docs/api/errors: a success "does not mean" the user was known ("you may
    have provided an unknown user ID"); the counts are of objects queued. So an unknown
    user under _update_existing_only is no error, counts as processed, and gets nothing:
    no profile, and no event either."""
    url = server.urls["braze"] + "/users/track"
    post(url, {"attributes": [{"external_id": "known", "arr": {"add": ["A"]}}]}, BRAZE_AUTH)
    only = {"_update_existing_only": True}
    body = {
        "attributes": [
            {"external_id": "ghost", "arr": {"add": ["A"]}, **only},
            {"external_id": "known", "arr": {"add": ["B"]}, **only},
            {"user_alias": {"alias_name": "g", "alias_label": "cio_id"}, "arr": {"add": ["A"]}},
        ],
        "events": [
            {"external_id": "ghost", "name": "entered", "time": "2026-01-01T00:00:00Z", **only},
            {"external_id": "known", "name": "entered", "time": "2026-01-01T00:00:00Z", **only},
        ],
    }
    status, _, answer = post(url, body, BRAZE_AUTH)
    assert status == 201
    assert answer == {"message": "success", "attributes_processed": 3, "events_processed": 2}
    profiles = StandInAdmin(server.urls["braze"]).profiles()
    assert profiles["users"] == {"external_id:known": {"arr": ["A", "B"]}}
    assert list(profiles["events"]) == ["external_id:known"]


def test_moengage_update_only_for_unknown_users_answers_as_documented(
    server: StandInServer,
) -> None:
    """A 200 means "accepted and will be processed soon"; Bulk Import reports no
    per-record outcome and Cohort Sync never creates users. An unknown customer under
    update_existing_only is accepted without an error and gets no profile."""
    base = server.urls["moengage"]
    ghost = {"type": "customer", "customer_id": "ghost", "update_existing_only": True,
             "attributes": {"addValueToArrayField": {"arr": ["A"]}}}  # fmt: skip
    status, _, body = post(f"{base}/v1/customer/{APP}", ghost, MOE_AUTH)
    assert status == 200 and body["status"] == "success" and "errors" not in body
    bulk = {"type": "transition", "elements": [{**ghost, "customer_id": "ghost2"}]}
    status, _, body = post(f"{base}/v1/transition/{APP}", bulk, MOE_AUTH)
    assert status == 200 and body["status"] == "success" and "errors" not in body
    assert StandInAdmin(base).profiles()["users"] == {}


@pytest.mark.parametrize("strict", [False, True])
def test_a_remove_of_a_value_never_added_is_counted_and_strictly_a_violation(
    strict: bool,
) -> None:
    with StandInServer(
        {"braze": BrazeStandIn("braze-key", strict=strict),
         "moengage": MoEngageStandIn(APP, KEY, strict=strict)}
    ) as s:  # fmt: skip
        braze, moe = s.urls["braze"], s.urls["moengage"]

        def attrs(user: str, op: str, value: str) -> dict[str, Any]:
            return {"attributes": [{"external_id": user, "a": {op: [value]}}]}

        def element(user: str, op: str, value: str) -> dict[str, Any]:
            return {"type": "customer", "customer_id": user, "attributes": {op: {"a": [value]}}}

        # added, then removed: fine; removed again (a redelivery): it was had, fine
        for op in ("add", "remove", "remove"):
            assert post(braze + "/users/track", attrs("u1", op, "A"), BRAZE_AUTH)[0] == 201
        assert post(braze + "/users/track", attrs("u2", "remove", "A"), BRAZE_AUTH)[0] == 201
        for op in ("addValueToArrayField", "removeValueFromArrayField"):
            assert post(moe + f"/v1/customer/{APP}", element("u1", op, "A"), MOE_AUTH)[0] == 200
        body = element("u2", "removeValueFromArrayField", "A")
        assert post(moe + f"/v1/customer/{APP}", body, MOE_AUTH)[0] == 200

        for url in (braze, moe):
            admin = StandInAdmin(url)
            report = admin.report()
            assert report["counters"]["remove_never_added"] == 1
            kinds = [v["kind"] for v in report["violations"]]
            assert kinds == (["remove_never_added"] if strict else [])
            if strict:
                assert "u2" in report["violations"][0]["detail"]
        # the profiles hold the final state
        assert StandInAdmin(braze).profiles()["users"]["external_id:u1"] == {"a": []}
        assert StandInAdmin(moe).profiles()["users"]["u1"] == {"a": []}
