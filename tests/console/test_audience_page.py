"""The one-audience page: the maximum time to exit derived from the definition, the
stuck members it finds (against a hand-computed case, to the millisecond), the
destinations that receive the audience with their acknowledged counts, and the swing
alert's rule on the size plot."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient

from streamsync.audiences.definition import Audience
from streamsync.console.acknowledged_counts import AcknowledgedCounts
from streamsync.console.config import SwingAlert
from streamsync.console.exit_bound import exit_bound
from streamsync.console.pages import swing_band
from streamsync.console.store import HOUR_MS
from streamsync.resources import project_path
from tests.console.support import EVIL, T0, VIEWER_TOKEN, bearer, delta, make_console, run_client

Client = TestClient[Any, Any]
CART = "ACT__CartAbandon__90m"
MINUTE_MS, DAY_MS = 60_000, 24 * HOUR_MS
#: 7d - 90m: a new cart add ends the membership until 90 minutes pass again.
CART_BOUND_MS = 7 * DAY_MS - 90 * MINUTE_MS
#: No evaluate section: evaluate's default lateness (5m) and idle grace (500ms), and 1m.
SLACK_MS = 5 * MINUTE_MS + 500 + MINUTE_MS


def _audience(**fields: Any) -> Audience:
    return Audience.model_validate(
        {"name": "ACT__T", "version": 1, "owner": "o", "description": "d", **fields}
    )


def test_the_maximum_time_to_exit_comes_from_the_windows_and_the_sticky_period() -> None:
    since = {"since_last": {"event": "A", "at_least": "90m", "less_than": "7d"}}
    cart = _audience(entry=since)
    assert exit_bound(cart, {}).ms == CART_BOUND_MS
    # An exit only shortens a membership.
    with_exit = _audience(entry=since, exit={"happened": {"event": "B"}})
    assert exit_bound(with_exit, {}).ms == CART_BOUND_MS
    # all: its shortest bounded part; in_audience: the referenced audience's bound.
    both = _audience(
        entry={"all": [{"in_audience": "ACT__T"}, {"count": {"event": "C", "at_least": 2}}]}
    )
    assert exit_bound(both.model_copy(update={"name": "ACT__U"}), {"ACT__T": cart}).ms == (
        CART_BOUND_MS
    )
    # A sticky period after an instantaneous trigger.
    sticky = _audience(entry={"happened": {"event": "A"}}, sticky_for="30d")
    assert exit_bound(sticky, {}).ms == 30 * DAY_MS
    # Unbounded: a window new records keep filling, a count, a trait, a negation.
    for entry in (
        {"since_last": {"event": "A", "less_than": "7d"}},
        {"count": {"event": "A", "at_least": 2, "within": "7d"}},
        {"trait": {"name": "x", "equals": "y"}},
        {"not": since},
        {"any": [since, {"happened": {"event": "A"}}]},
    ):
        bound = exit_bound(_audience(entry=entry), {})
        assert bound.ms is None and bound.why
    assert exit_bound(_audience(entry=since, sticky_for="1d"), {}).ms is None


def _stuck_case() -> list[Any]:
    now = T0 + CART_BOUND_MS + SLACK_MS + 1
    return [
        # entered exactly 1 ms too long ago: stuck
        delta(EVIL, "enter", T0, 1),
        # entered 1 ms later: right at the limit, not stuck
        delta("edge", "enter", T0 + 1, 1),
        delta("fresh", "enter", now - HOUR_MS, 1),
        # entered long ago but left: not a member
        delta("gone", "enter", T0 - DAY_MS, 1),
        delta("gone", "exit", T0 - DAY_MS + HOUR_MS, 2),
        # the newest delta, of another audience, sets the clock
        delta("z", "enter", now, 1, audience="SUP__RecentPurchasers__7d"),
    ]


def test_stuck_members_are_those_older_than_the_bound_by_more_than_the_slack(
    tmp_path: Path,
) -> None:
    console = make_console(tmp_path, _stuck_case())

    async def work(client: Client) -> None:
        body = await (await client.get(f"/audiences/{CART}", headers=bearer(VIEWER_TOKEN))).text()
        section = body[body.index('id="stuck"') : body.index("<h2>Current members</h2>")]
        assert 'data-stuck="1"' in section
        assert "Maximum time to exit: 6d 22h 30m" in section
        assert "&lt;script&gt;alert" in section and "<script>alert" not in body
        assert "edge" not in section and "fresh" not in section and "gone" not in section
        # An audience without a bounded exit says so instead.
        other = await client.get(
            "/audiences/SUP__RecentPurchasers__7d", headers=bearer(VIEWER_TOKEN)
        )
        text = await other.text()
        assert "No stuck rule: this audience has no bounded exit" in text

    run_client(console, work)


def test_the_destinations_receiving_the_audience_with_their_acknowledged_counts(
    tmp_path: Path,
) -> None:
    console = make_console(tmp_path, _stuck_case())
    counts = AcknowledgedCounts("braze", "streamsync-deliver-braze.acknowledged")
    counts.acknowledged = Counter({CART: 1234, "SUP__RecentPurchasers__7d": 5})
    counts.pending = Counter({CART: 3})
    counts.holdout = Counter({CART: 7})
    fake = console.state.sources
    fake.acked["braze"] = counts  # type: ignore[attr-defined]

    async def work(client: Client) -> None:
        body = await (await client.get(f"/audiences/{CART}", headers=bearer(VIEWER_TOKEN))).text()
        row = body[body.index('<tr data-destination="braze">') :]
        row = row[: row.index("</tr>")]
        assert 'class="num acknowledged">1,234<' in row
        assert ">7<" in row and ">3<" in row
        assert "streamsync-deliver-braze.acknowledged" in row
        fake.acked.clear()  # type: ignore[attr-defined]
        body = await (await client.get(f"/audiences/{CART}", headers=bearer(VIEWER_TOKEN))).text()
        assert "does not exist yet" in body

    run_client(console, work)


def test_a_destination_routing_other_audiences_is_not_listed(tmp_path: Path) -> None:
    console = make_console(tmp_path, _stuck_case())
    dest = console.state.config.destinations["braze"]
    routed = dest.model_copy(update={"audiences": ["SUP__RecentPurchasers__7d"]})
    console.state.config.destinations["braze"] = routed

    async def work(client: Client) -> None:
        body = await (await client.get(f"/audiences/{CART}", headers=bearer(VIEWER_TOKEN))).text()
        assert "No configured destination receives this audience." in body

    run_client(console, work)


def test_the_swing_rule_is_the_charts_and_is_drawn_as_a_band(tmp_path: Path) -> None:
    values = yaml.safe_load(project_path("helm", "streamsync", "values.yaml").read_text())
    rule = values["prometheusRule"]
    default = SwingAlert()
    assert default.percent == rule["audienceSwingPercent"]
    assert default.min_members == rule["audienceSwingMinMembers"]
    # 24 points back; below the minimum there is no band.
    sizes = [50] * 24 + [200] * 24 + [150]
    low, high = swing_band(sizes, 24, SwingAlert(percent=50, min_members=100))
    assert low[:48] == [None] * 48 and high[:48] == [None] * 48
    assert (low[48], high[48]) == (100.0, 300.0)
    deltas = [delta(f"c{i}", "enter", T0 + i * HOUR_MS, 1) for i in range(30)]
    console = make_console(tmp_path, deltas, swing_alert={"percent": 20, "min_members": 2})

    async def work(client: Client) -> None:
        headers = bearer(VIEWER_TOKEN)
        data = await (await client.get(f"/audiences/{CART}/sizes.json", headers=headers)).json()
        assert data["sizes"][24] == 25 and data["sizes"][0] == 1
        # 24 hours before point 25 the size was 2: the band is 2 -20% .. 2 +20%.
        assert data["swing_low"][25] == pytest.approx(1.6)
        assert data["swing_high"][25] == pytest.approx(2.4)
        assert data["swing_low"][24] is None  # 24 hours before, 1 member: under the minimum
        body = await (await client.get(f"/audiences/{CART}", headers=headers)).text()
        assert "more than 20% from its size 24 hours earlier" in body
        assert "at least 2 members" in body

    run_client(console, work)


def test_acknowledged_counts_are_read_again_only_after_a_while(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamsync.console import sources

    reads: list[str] = []

    def read(_config: Any, destination: str, *, timeout_s: float) -> AcknowledgedCounts:
        reads.append(destination)
        return AcknowledgedCounts(destination, "t", Counter({CART: len(reads)}))

    clock = [1000.0]
    monkeypatch.setattr(sources, "read_acknowledged", read)
    config = make_console(tmp_path).state.config
    kafka = sources.KafkaSources(config, 1.0, 1.0, clock=lambda: clock[0])

    async def work() -> list[int]:
        seen = [(await kafka.acknowledged("braze")).acknowledged[CART]]
        clock[0] += sources.ACKNOWLEDGED_TTL_S / 2
        seen.append((await kafka.acknowledged("braze")).acknowledged[CART])
        clock[0] += sources.ACKNOWLEDGED_TTL_S
        seen.append((await kafka.acknowledged("braze")).acknowledged[CART])
        return seen

    assert asyncio.run(work()) == [1, 1, 2]
    assert reads == ["braze", "braze"]
