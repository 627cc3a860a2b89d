"""The Customer page's acknowledged state is what deliver acknowledged: a real broker, a
real deliver loop backfilling the strict Braze stand-in, and the page read through the
console's Kafka sources (only the customer's partition of ``<group>.acknowledged``)."""

from __future__ import annotations

import asyncio
import dataclasses
import html
import re
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from streamsync.config import load_config
from streamsync.console.config import AuthConfig, ConsoleConfig
from streamsync.console.customer_destinations import read_customer_acknowledged
from streamsync.console.server import create_console
from streamsync.console.sources import KafkaSources
from streamsync.deltas.audit import CustomerAudit
from streamsync.dev.standins import StandInAdmin, StandInServer
from streamsync.dev.standins.compare import braze_members, differences, expected_members
from tests.console.support import ENV, EXAMPLE_AUDIENCES, VIEWER_TOKEN, bearer, run_client
from tests.destinations.conftest import standins  # noqa: F401  (the stand-ins fixture)
from tests.destinations.helpers import produce_with_members, synthetic_deltas
from tests.destinations.test_reconcile import _acknowledged, _config, _delivering, _topics, _wait

pytestmark = pytest.mark.kafka


class _NoExplain(KafkaSources):
    """The cluster's sources without explain's read of the input topics (this test's
    configuration has none; the timeline is tested elsewhere)."""

    async def audit(self, customer: str) -> CustomerAudit:
        return CustomerAudit(customer, "d", [0], input_topics=[])


def _page_rows(page: str) -> dict[str, tuple[str, str, str]]:
    """audience -> (state, identity, verdict) of the braze section of the page."""
    section = re.search(
        r'<section class="told" data-destination="braze">(.*?)</section>', page, re.S
    )
    assert section, page
    rows = {}
    for row in re.findall(r"<tr (data-audience=.*?)</tr>", section[1], re.S):
        data = dict(re.findall(r'data-([a-z]+)="([^"]*)"', row.split(">", 1)[0]))
        identity = re.search(r'<td class="identity">([^<]*)</td>', row)
        assert identity
        rows[html.unescape(data["audience"])] = (
            data["state"],
            html.unescape(identity[1]),
            html.unescape(data["verdict"]),
        )
    return rows


def test_the_customer_page_shows_what_the_acknowledged_topic_holds(
    tmp_path: Path,
    kafka_bootstrap_servers: str,
    standins: StandInServer,  # noqa: F811
) -> None:
    deltas = synthetic_deltas(customers=60, events=1500, seed=9)
    topic, members_topic = _topics(kafka_bootstrap_servers, 3)
    produce_with_members(kafka_bootstrap_servers, topic, members_topic, 3, deltas)
    admin = StandInAdmin(standins.urls["braze"])
    admin.faults(strict=True)
    group = f"console-customer-{uuid.uuid4().hex[:8]}"
    path = _config(
        tmp_path / "c.yaml", kafka_bootstrap_servers, topic, standins.urls["braze"], group
    )
    config = load_config(path, env={})
    expected = expected_members(deltas)
    assert expected
    customer = max(expected, key=lambda c: (len(expected[c]), c))
    before = read_customer_acknowledged(config, "braze", customer, timeout_s=30)
    assert not before.exists  # deliver has not started
    with _delivering(path):
        _wait(
            lambda: not differences(expected, braze_members(admin.profiles())),
            "the backfill to match replay",
        )
    recorded = _acknowledged(kafka_bootstrap_servers, group)
    section = ConsoleConfig(
        auth=AuthConfig.model_validate(
            {"users": [{"name": "vera", "token": {"env": "VIEWER_TOKEN"}}]}
        ),
        audiences=EXAMPLE_AUDIENCES,
        read_timeout_s=30,
    )
    with_console = config.model_copy(update={"console": section})
    console = create_console(
        with_console, sources=_NoExplain(with_console, 30, 30), feed=False, env=ENV
    )

    async def page_of(client: TestClient[Any, Any], who: str) -> str:
        response = await client.get("/customers", params={"q": who}, headers=bearer(VIEWER_TOKEN))
        assert response.status == 200
        return await response.text()

    others = [c for c in expected if c != customer]
    customers = [customer, others[0]]
    # The customer then leaves one audience while deliver is stopped: the topic still
    # holds the value, the filter no longer wants it, and the page says it will be
    # detached.
    left = sorted(expected[customer])[0]
    last = max(
        (d for d in deltas if d.customer_id == customer and d.audience == left),
        key=lambda d: d.seq,
    )
    exit_delta = dataclasses.replace(
        last, op="exit", seq=last.seq + 1, at_ms=last.at_ms + 1, record_ids=[]
    )

    async def work(client: TestClient[Any, Any]) -> tuple[list[str], str]:
        pages = [await page_of(client, who) for who in customers]
        await asyncio.to_thread(
            produce_with_members, kafka_bootstrap_servers, topic, members_topic, 3, [exit_delta]
        )
        return pages, await page_of(client, customer)

    pages, after = run_client(console, work)
    for who, page in zip(customers, pages, strict=True):
        held = {
            audience: entry
            for (audience, c), entry in recorded.items()
            if c == who and entry is not None
        }
        assert held and {a for a, e in held.items() if not e.holdout} == expected[who]
        read = read_customer_acknowledged(config, "braze", who, timeout_s=30)
        assert read.exists and read.complete and read.undecodable == 0
        assert read.entries == held
        rows = _page_rows(page)
        assert set(rows) == set(held), (who, rows)
        for audience, entry in held.items():
            state, identity, verdict = rows[audience]
            assert not entry.pending
            assert state == "acknowledged"
            shown = identity if isinstance(entry.identity, str) else orjson.loads(identity)
            assert shown == entry.identity
            assert verdict == "in sync"  # the backfill matched: nothing left to send
    rows = _page_rows(after)
    assert rows[left][0] == "acknowledged"
    assert rows[left][2] == "no longer desired"
    assert all(verdict == "in sync" for a, (_, _, verdict) in rows.items() if a != left)
