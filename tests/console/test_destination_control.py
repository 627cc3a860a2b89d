"""The destinations page's operator forms on the real broker: a confirmed pause or
rollout is written to the destination's control topic (what every deliver replica and
``streamsync destinations`` read), shown on the page and in the audit log; the page shows
desired vs acknowledged per audience as the deliver processes report them."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from streamsync.destinations.operations import read_view
from streamsync.observability.admin import AdminServer
from streamsync.observability.metrics import Telemetry
from tests.console.support import OPERATOR_TOKEN, VIEWER_TOKEN, bearer, make_console, run_client

pytestmark = pytest.mark.kafka

Client = TestClient[Any, Any]


async def _csrf(client: Client, headers: dict[str, str]) -> str:
    page = await (await client.get("/health", headers=headers)).text()
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page)
    assert found, page
    return found[1]


def test_an_operator_pauses_and_rolls_out_through_the_control_topic(
    tmp_path: Path, kafka_bootstrap_servers: str
) -> None:
    telemetry = Telemetry(role="deliver")
    telemetry.set_destination_members("braze", "ACT__CartAbandon__90m", "desired", 120)
    telemetry.set_destination_members("braze", "ACT__CartAbandon__90m", "acknowledged", 117)
    telemetry.set_destination_members("braze", "ACT__CartAbandon__90m", "pending", 3)
    with AdminServer(telemetry) as admin:
        console = make_console(
            tmp_path,
            processes=[
                {"name": "deliver-braze", "role": "deliver", "url": admin.url,
                 "destination": "braze"},
            ],
        )  # fmt: skip
        config = console.state.config
        group = f"console-{uuid.uuid4().hex[:8]}"
        braze = config.destinations["braze"].model_copy(update={"group_id": group})
        console.state.config = config.model_copy(
            update={
                "kafka": config.kafka.model_copy(
                    update={"bootstrap_servers": kafka_bootstrap_servers}
                ),
                "destinations": {"braze": braze},
            }
        )

        async def work(client: Client) -> None:
            viewer, operator = bearer(VIEWER_TOKEN), bearer(OPERATOR_TOKEN)
            page = await (await client.get("/destinations", headers=viewer)).text()
            assert 'id="control-braze"' not in page  # no forms for a viewer
            page = await (await client.get("/destinations", headers=operator)).text()
            assert 'id="control-braze"' in page
            row = page[page.index('data-audience="ACT__CartAbandon__90m"') :]
            cells = re.findall(r'<td class="num">([^<]*)</td>', row[: row.index("</tr>")])
            assert cells == ["120", "117", "3"]  # desired, acknowledged, pending
            csrf = await _csrf(client, operator)
            done = await client.post(
                "/destinations/braze/pause",
                data={"confirm": "yes", "csrf_token": csrf},
                headers=operator, allow_redirects=False,
            )  # fmt: skip
            assert done.status == 303
            rolled = await client.post(
                "/destinations/braze/rollout",
                data={"confirm": "yes", "csrf_token": csrf, "percent": "10",
                      "customers": "t1, t2", "audience": "ACT__CartAbandon__90m"},
                headers=operator, allow_redirects=False,
            )  # fmt: skip
            assert rolled.status == 303
            page = await (await client.get("/destinations", headers=operator)).text()
            row = page[page.index('<tr data-destination="braze">') :]
            assert "paused; ACT__CartAbandon__90m rollout 10% + 2 listed" in row
            health = await (await client.get("/health", headers=operator)).text()
            assert "pause destination braze" in health and "paused braze" in health
            wrong = await client.post(
                "/destinations/braze/rollout",
                data={"confirm": "yes", "csrf_token": csrf, "percent": "120"},
                headers=operator,
            )  # fmt: skip
            assert wrong.status == 400  # one line, nothing written
            assert "less than or equal to 100" in await wrong.text()

        run_client(console, work)
    view = read_view(console.state.config, "braze")
    assert view.paused
    cohort = view.audience_rollouts["ACT__CartAbandon__90m"]
    assert cohort.percent == 10 and cohort.customers == {"t1", "t2"}
