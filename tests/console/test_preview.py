"""Page 5, preview a change: a pasted or uploaded definition is diffed against the running
ones (``audiences diff``'s computation), for viewers and operators alike; the POST needs
its CSRF token; invalid YAML or an invalid definition is the validator's one line,
escaped; an oversized upload is refused; nothing is written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from streamsync.console.preview import PREVIEW_MAX_BYTES
from streamsync.ingest.event import Event, SourcePosition
from tests.console.support import (
    EVIL,
    OPERATOR_TOKEN,
    T0,
    VIEWER_TOKEN,
    bearer,
    make_console,
    run_client,
)

Client = TestClient[Any, Any]
MINUTE_MS = 60_000
CHANGED = """\
name: ACT__CartAbandon__90m
version: 2
owner: retention@example.com
description: Added to cart, no order for 30 minutes.
entry:
  since_last: {event: Product Added, at_least: 30m, less_than: 7d}
exit:
  occurred_since_last: {event: Order Completed, since: {event: Product Added}}
"""


def _records() -> dict[str, Event]:
    """``old`` added to cart 100 minutes before the clock, ``evil`` 40 minutes before: at
    90 minutes only ``old`` is a member, at 30 minutes both are."""
    where = SourcePosition("in", 0, 1)
    records = [
        Event("old", "track", "Product Added", T0, "r1", source=where),
        Event(EVIL, "track", "Product Added", T0 + 60 * MINUTE_MS, "r2", source=where),
        Event("clock", "track", "Page Viewed", T0 + 100 * MINUTE_MS, "r3", source=where),
    ]
    return {r.record_id: r for r in records}


async def _csrf(client: Client, headers: dict[str, str]) -> str:
    page = await (await client.get("/preview", headers=headers)).text()
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page)
    assert found, page
    return found[1]


@pytest.mark.parametrize("token", [VIEWER_TOKEN, OPERATOR_TOKEN])
def test_a_pasted_change_shows_the_diff_on_the_running_data(tmp_path: Path, token: str) -> None:
    console = make_console(tmp_path, records=_records())

    async def work(client: Client) -> None:
        headers = bearer(token)
        form = {"definition": CHANGED, "csrf_token": await _csrf(client, headers)}
        response = await client.post("/preview", data=form, headers=headers)
        body = await response.text()
        assert response.status == 200, body
        # The audience, and the one built on it (in_audience), gain the same customer.
        assert 'data-enter="2" data-leave="0"' in body
        assert '<tr data-audience="ACT__CartAbandon__MedIntent">' in body
        row = body[body.index('<tr data-audience="ACT__CartAbandon__90m">') :]
        row = row[: row.index("</tr>")]
        assert "changed (version 1 -&gt; 2)" in row
        assert 'class="num before">1<' in row and 'class="num after">2<' in row
        assert "&lt;script&gt;alert" in row and "<script>alert" not in body
        assert "total: 2 enter(s), 0 leave(s)" in body  # the CLI's own text
        assert "CheckoutAbandon" in body  # the others, unchanged, are listed
        # The pasted audience replaced the running one of its name; the rest ran as is.
        ((current, new),) = console.state.sources.diffs  # type: ignore[attr-defined]
        assert sorted(a.name for a in new) == sorted(current)
        assert [a.version for a in new if a.name == "ACT__CartAbandon__90m"] == [2]

    run_client(console, work)


def test_an_uploaded_file_is_previewed_and_an_oversized_one_refused(tmp_path: Path) -> None:
    console = make_console(tmp_path, records=_records())

    async def work(client: Client) -> None:
        headers = bearer(VIEWER_TOKEN)
        csrf = await _csrf(client, headers)
        form = aiohttp.FormData()
        form.add_field("csrf_token", csrf)
        form.add_field("file", CHANGED.encode(), filename="cart.yaml", content_type="text/yaml")
        response = await client.post("/preview", data=form, headers=headers)
        assert response.status == 200
        assert 'data-enter="2"' in await response.text()
        big = aiohttp.FormData()
        big.add_field("csrf_token", csrf)
        padding = "# " + "x" * PREVIEW_MAX_BYTES + "\n"
        big.add_field("file", (padding + CHANGED).encode(), filename="big.yaml")
        refused = await client.post("/preview", data=big, headers=headers)
        assert refused.status in (413, 422)
        assert 'id="preview-result"' not in await refused.text()
        assert len(console.state.sources.diffs) == 1  # type: ignore[attr-defined]

    run_client(console, work)


def test_the_preview_post_needs_its_csrf_token_and_a_principal(tmp_path: Path) -> None:
    console = make_console(tmp_path, records=_records())

    async def work(client: Client) -> None:
        headers = bearer(VIEWER_TOKEN)
        refused = await client.post("/preview", data={"definition": CHANGED}, headers=headers)
        assert refused.status == 403
        assert "security token" in await refused.text()
        csrf = await _csrf(client, headers)
        foreign = await client.post(
            "/preview",
            data={"definition": CHANGED, "csrf_token": csrf},
            headers={**headers, "Origin": "https://evil.example"},
        )
        assert foreign.status == 403
        anonymous = await client.post("/preview", data={"definition": CHANGED, "csrf_token": csrf})
        assert anonymous.status == 401
        assert console.state.sources.diffs == []  # type: ignore[attr-defined]

    run_client(console, work)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: [unclosed\n", "the pasted definition:1: error: not valid YAML"),
        (
            CHANGED.replace(
                "exit:\n  occurred_since_last: {event: Order Completed, "
                "since: {event: Product Added}}",
                f"exit:\n  in_audience: '{EVIL}'",
            ),
            "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;",
        ),
        (CHANGED.replace("at_least: 30m", "at_least: soon"), "the pasted definition:6: error:"),
        (
            CHANGED.replace("Product Added, at_least", "Product Added, colour: red, at_least"),
            "the pasted definition:6: error:",
        ),
        ("", "nothing pasted or uploaded"),
    ],
)
def test_an_invalid_definition_is_the_validators_line_escaped(
    tmp_path: Path, text: str, expected: str
) -> None:
    console = make_console(tmp_path, records=_records())

    async def work(client: Client) -> None:
        headers = bearer(VIEWER_TOKEN)
        form = {"definition": text, "csrf_token": await _csrf(client, headers)}
        response = await client.post("/preview", data=form, headers=headers)
        body = await response.text()
        assert response.status == 422
        error = re.search(r'<p class="error" id="preview-error">([^<]*)</p>', body)
        assert error, body
        assert expected in error[1]
        assert "\n" not in error[1]
        assert "<script>alert" not in body
        assert "streamsync-preview-" not in body  # no temporary path
        assert console.state.sources.diffs == []  # type: ignore[attr-defined]

    run_client(console, work)
