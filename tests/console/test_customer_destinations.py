"""The Customer page's "what each destination was told and acknowledged": the entries of
the destination's acknowledged topic for the customer next to what its filter wants, with
the verdict deliver's next comparison acts on; everything shown as text."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from streamsync.console.customer_destinations import (
    CustomerAcknowledged,
    compare,
    why_not_desired,
)
from streamsync.deltas.membership import Member
from streamsync.destinations.acknowledged import Acked
from streamsync.destinations.commands import ControlView
from streamsync.destinations.desired import DesiredFilter
from streamsync.destinations.rollout import Cohort, Rollout, rollout_bucket
from tests.console.support import EVIL, T0, VIEWER_TOKEN, bearer, delta, make_console, run_client

Client = TestClient[Any, Any]
CART, CHECKOUT, VIP = (
    "ACT__CartAbandon__90m",
    "ACT__CheckoutAbandon__HighIntent",
    "SUP__VIP__LTV500",
)


def _rows(page: str, destination: str) -> dict[str, dict[str, str]]:
    """audience -> the row's data attributes, in ``destination``'s section."""
    section = re.search(
        rf'<section class="told" data-destination="{re.escape(destination)}">(.*?)</section>',
        page,
        re.S,
    )
    assert section, page
    rows = {}
    for attributes in re.findall(r"<tr (data-audience=[^>]*)>", section[1]):
        found = dict(re.findall(r'data-([a-z]+)="([^"]*)"', attributes))
        rows[html.unescape(found["audience"])] = {k: html.unescape(v) for k, v in found.items()}
    return rows


def test_each_audience_shows_acknowledged_state_and_what_the_filter_wants(tmp_path: Path) -> None:
    deltas = [
        delta(EVIL, "enter", T0, 1, audience=CART),
        delta(EVIL, "enter", T0, 2, audience=CHECKOUT),
        delta(EVIL, "enter", T0, 3, audience="SUP__SubscriptionActive", holdout=True),
    ]
    console = make_console(tmp_path, deltas)
    sources: Any = console.state.sources
    sources.customer_acked["braze"] = {
        EVIL: {
            CART: Acked({"external_id": EVIL}, holdout=False),
            VIP: Acked(EVIL, holdout=False),  # no longer a member
            CHECKOUT: Acked(EVIL, holdout=False, pending=True),
        }
    }

    async def work(client: Client) -> str:
        response = await client.get("/customers", params={"q": EVIL}, headers=bearer(VIEWER_TOKEN))
        assert response.status == 200
        return await response.text()

    page = run_client(console, work)
    assert EVIL not in page  # the id, the identity and everything else are text
    assert '<h2 id="customer-id">&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;</h2>' in page
    # the identity it was acknowledged under, as the topic holds it
    identity = (
        "{&#34;external_id&#34;:&#34;&lt;script&gt;alert(\\&#34;x\\&#34;)&lt;/script&gt;&#34;}"
    )
    assert f'<td class="identity">{identity}</td>' in page, page
    rows = _rows(page, "braze")
    assert set(rows) == {CART, CHECKOUT, VIP, "SUP__SubscriptionActive"}
    assert rows[CART]["state"] == "acknowledged" and rows[CART]["verdict"] == "in sync"
    assert rows[CHECKOUT]["state"] == "pending"
    assert rows[CHECKOUT]["verdict"] == "desired, not yet acknowledged"
    assert rows[VIP]["state"] == "acknowledged" and rows[VIP]["desired"] == "no"
    assert rows[VIP]["verdict"] == "no longer desired"
    # holdout: skip (the default): a holdout member is not desired, nothing was sent
    holdout = rows["SUP__SubscriptionActive"]
    assert (holdout["state"], holdout["desired"], holdout["verdict"]) == (
        "not sent", "no", "not desired",
    )  # fmt: skip
    assert "acknowledged but no longer desired (will be detached)" in page
    assert "desired but not yet acknowledged" in page
    assert "in the holdout (holdout: skip)" in page


def test_a_destination_without_its_topic_says_nothing_was_acknowledged(tmp_path: Path) -> None:
    console = make_console(tmp_path, [delta("c1", "enter", T0, 1, audience=CART)])

    async def work(client: Client) -> str:
        response = await client.get("/customers", params={"q": "c1"}, headers=bearer(VIEWER_TOKEN))
        return await response.text()

    page = run_client(console, work)
    assert "braze.acknowledged does not exist" in page
    rows = _rows(page, "braze")
    assert rows[CART]["state"] == "not sent"
    assert rows[CART]["verdict"] == "desired, not yet acknowledged"


def _member(audience: str, customer: str, holdout: bool = False) -> Member:
    return Member.from_enter(delta(customer, "enter", T0, 1, audience=audience, holdout=holdout))


def test_the_verdict_follows_the_filter_deliver_applies() -> None:
    outside = next(f"c{i}" for i in range(1000) if rollout_bucket(f"c{i}") >= 10)
    inside = next(f"c{i}" for i in range(1000) if rollout_bucket(f"c{i}") < 10)
    want = DesiredFilter(
        frozenset({CART, CHECKOUT, VIP}), "marker", Rollout(percent=10), frozenset({VIP})
    )
    assert why_not_desired(want, _member(CART, outside), CART) == "outside the cohort / rollout"
    assert why_not_desired(want, _member(CART, inside), CART) == ""
    assert why_not_desired(want, _member(VIP, inside), VIP) == "detached (control topic)"
    assert why_not_desired(want, _member("Other", inside), "Other") == (
        "not routed to this destination"
    )
    assert why_not_desired(want, None, CART) == "not a member"
    # A cohort names the customer: included whatever the percentage.
    listed = DesiredFilter(
        None,
        "skip",
        ControlView(rollout=Cohort(customers=frozenset({outside}), percent=0)).effective_rollout(
            Rollout()
        ),
    )
    assert why_not_desired(listed, _member(CART, outside), CART) == ""
    # holdout: marker - the marker is desired; a plain value on record is replaced.
    acked = CustomerAcknowledged("braze", "t", {CART: Acked(inside, holdout=False)})
    (row,) = compare([_member(CART, inside, holdout=True)], acked, want)
    assert row.desired and row.member_holdout and not row.acked_holdout
    assert row.verdict == "desired, not yet acknowledged"
    # Outside the rollout yet acknowledged: detached.
    acked = CustomerAcknowledged("braze", "t", {CART: Acked(outside, holdout=False)})
    (row,) = compare([_member(CART, outside)], acked, want)
    assert row.verdict == "no longer desired" and row.identity == outside
