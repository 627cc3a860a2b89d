"""The console's pages through aiohttp's test client, without a broker: every page
renders, sign-in and roles are enforced, CSRF is required, and user input is text."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from streamsync.console.app import CSP
from streamsync.console.store import HOUR_MS
from streamsync.deltas.record import format_rfc3339_ms
from streamsync.ingest.event import Event, SourcePosition
from streamsync.observability.admin import AdminServer
from streamsync.observability.metrics import Telemetry
from tests.console.support import (
    EVIL,
    EXAMPLE_AUDIENCES,
    OPERATOR_TOKEN,
    PASSWORD,
    T0,
    VIEWER_TOKEN,
    bearer,
    delta,
    make_console,
    run_client,
)

Client = TestClient[Any, Any]

PAGES = ["/audiences", "/audiences/ACT__CartAbandon__90m", "/customers", "/destinations",
         "/preview", "/health", "/dead-letters"]  # fmt: skip


def _deltas() -> list[Any]:
    return [
        delta("c1", "enter", T0, 1, record_ids=["r1"], identifiers={"email": "C1@Example.com"}),
        delta("c2", "enter", T0 + HOUR_MS, 1),
        delta("c1", "exit", T0 + 3 * HOUR_MS, 2, record_ids=["r2"]),
        delta(EVIL, "enter", T0 + 4 * HOUR_MS, 1, record_ids=["r3"]),
    ]


def _records() -> dict[str, Event]:
    where = SourcePosition("in", 0, 7)
    return {
        "r1": Event("c1", "track", "Product Added", T0 - 90 * 60_000, "r1", source=where),
        "r2": Event("c1", "track", "Order Completed", T0 + 3 * HOUR_MS, "r2", source=where),
        "r3": Event(EVIL, "track", EVIL, T0 + 4 * HOUR_MS, "r3", source=where),
    }


async def _csrf(client: Client, headers: dict[str, str]) -> str:
    page = await (await client.get("/health", headers=headers)).text()
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page)
    assert found, page
    return found[1]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_for_a_viewer_with_the_security_headers(
    tmp_path: Path, path: str
) -> None:
    console = make_console(tmp_path, _deltas(), _records())

    async def work(client: Client) -> None:
        response = await client.get(path, headers=bearer(VIEWER_TOKEN))
        body = await response.text()
        assert response.status == 200, body
        assert response.content_type == "text/html"
        headers = response.headers
        assert headers["Content-Security-Policy"] == CSP
        assert "frame-ancestors 'none'" in CSP and "script-src 'self'" in CSP
        assert "unsafe-inline" not in CSP
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["Cache-Control"] == "no-store"
        # No inline script: every <script> has a src of the console's own.
        for tag in re.findall(r"<script[^>]*>", body):
            assert re.search(r'src="/static/', tag), tag
        assert not re.search(r"<[^>]+\son[a-z]+=", body)  # no inline event handlers
        for secret in (VIEWER_TOKEN, OPERATOR_TOKEN, PASSWORD):
            assert secret not in body

    run_client(console, work)


@pytest.mark.parametrize("path", [*PAGES, "/audiences/ACT__CartAbandon__90m/sizes.json"])
def test_without_a_principal_every_page_is_401(tmp_path: Path, path: str) -> None:
    console = make_console(tmp_path, _deltas())

    async def work(client: Client) -> None:
        for headers in ({}, bearer("wrong"), {"Authorization": "Basic b3R0bzp3cm9uZw=="}):
            response = await client.get(path, headers=headers, allow_redirects=False)
            assert response.status == 401
            assert "WWW-Authenticate" in response.headers
            assert response.headers["Content-Security-Policy"] == CSP
        # The console's own probe and the static files need no sign-in.
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/static/console.js")).status == 200

    run_client(console, work)


def test_basic_auth_and_a_session_from_the_sign_in_form(tmp_path: Path) -> None:
    console = make_console(tmp_path, _deltas())

    async def work(client: Client) -> None:
        basic = {"Authorization": aiohttp.encode_basic_auth("otto", PASSWORD)}
        response = await client.get("/audiences", headers=basic)
        assert response.status == 200
        assert "otto" in await response.text()
        form = await (await client.get("/login")).text()
        token = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert token
        # The sign-in form's own token is required.
        bad = await client.post("/login", data={"secret": VIEWER_TOKEN, "csrf_token": "x"})
        assert bad.status == 403
        wrong = await client.post("/login", data={"secret": "nope", "csrf_token": token[1]})
        assert wrong.status == 401
        form = await (await client.get("/login")).text()
        token = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert token
        signed = await client.post(
            "/login",
            data={"secret": VIEWER_TOKEN, "csrf_token": token[1], "next": "//evil.example"},
            allow_redirects=False,
        )
        assert signed.status == 303
        assert signed.headers["Location"] == "/audiences"  # never another site
        cookie = signed.cookies["streamsync_console"]
        assert cookie["httponly"] and cookie["samesite"] == "Strict"
        page = await client.get("/audiences")
        assert page.status == 200 and "vera" in await page.text()
        csrf = await _csrf(client, {})
        out = await client.post("/logout", data={"csrf_token": csrf}, allow_redirects=False)
        assert out.status == 303
        assert (await client.get("/audiences")).status == 401

    run_client(console, work)


def test_a_viewer_cannot_act_and_a_request_without_csrf_is_refused(tmp_path: Path) -> None:
    console = make_console(tmp_path, _deltas())
    rebuilt: list[bool] = []
    console.state.rebuild = lambda: rebuilt.append(True)

    async def work(client: Client) -> None:
        viewer, operator = bearer(VIEWER_TOKEN), bearer(OPERATOR_TOKEN)
        form = {"confirm": "yes"}
        # No CSRF token: 403, for an operator too.
        refused = await client.post("/store/rebuild", data=form, headers=operator)
        assert refused.status == 403
        assert "security token" in await refused.text()
        # Another principal's token does not do.
        viewer_csrf = await _csrf(client, viewer)
        crossed = await client.post(
            "/store/rebuild", data={**form, "csrf_token": viewer_csrf}, headers=operator
        )
        assert crossed.status == 403
        # A viewer with a valid token: 403, not an operator.
        as_viewer = await client.post(
            "/store/rebuild", data={**form, "csrf_token": viewer_csrf}, headers=viewer
        )
        assert as_viewer.status == 403
        assert "operator" in await as_viewer.text()
        pause = await client.post(
            "/destinations/braze/pause", data={"csrf_token": viewer_csrf}, headers=viewer
        )
        assert pause.status == 403
        assert not rebuilt
        # Another site's form (its Origin) is refused even with the token.
        operator_csrf = await _csrf(client, operator)
        foreign = await client.post(
            "/store/rebuild",
            data={**form, "csrf_token": operator_csrf},
            headers={**operator, "Origin": "https://evil.example"},
        )
        assert foreign.status == 403
        done = await client.post(
            "/store/rebuild",
            data={**form, "csrf_token": operator_csrf},
            headers={**operator, "X-CSRF-Token": operator_csrf},
            allow_redirects=False,
        )
        assert done.status == 303
        assert rebuilt == [True]
        # Pause asks for confirmation first; confirmed, it is written to the control
        # topic (Kafka is not reachable here: "not done", and logged either way).
        asked = await client.post(
            "/destinations/braze/pause", headers={**operator, "X-CSRF-Token": operator_csrf}
        )
        assert asked.status == 200
        assert "Confirm: pause destination braze" in await asked.text()
        paused = await client.post(
            "/destinations/braze/pause", data={"confirm": "yes", "csrf_token": operator_csrf},
            headers=operator,
        )  # fmt: skip
        assert paused.status == 503
        assert "Not done" in await paused.text()
        unknown = await client.post(
            "/destinations/nope/pause", data={"confirm": "yes", "csrf_token": operator_csrf},
            headers=operator,
        )  # fmt: skip
        assert unknown.status == 404
        health = await (await client.get("/health", headers=operator)).text()
        assert "pause destination braze" in health and "rebuild the store" in health

    run_client(console, work)


def test_a_script_customer_id_and_event_name_are_shown_as_text(tmp_path: Path) -> None:
    console = make_console(tmp_path, _deltas(), _records())

    async def work(client: Client) -> None:
        headers = bearer(VIEWER_TOKEN)
        pages = [
            await client.get("/customers", params={"q": EVIL}, headers=headers),
            await client.get("/audiences/ACT__CartAbandon__90m", headers=headers),
            await client.get("/audiences/" + "%3Cscript%3E", headers=headers),
        ]
        for response in pages:
            body = await response.text()
            assert "<script>alert" not in body
        customer = await pages[0].text()
        assert html.escape(EVIL, quote=True) in customer or "&lt;script&gt;" in customer
        assert 'data-op="enter"' in customer
        assert customer.count("&lt;script&gt;alert") >= 3  # heading, record name, explain
        assert pages[2].status == 404

    run_client(console, work)


def test_the_audiences_page_shows_sizes_and_changes_from_the_store(tmp_path: Path) -> None:
    console = make_console(tmp_path, _deltas())

    async def work(client: Client) -> None:
        headers = bearer(VIEWER_TOKEN)
        body = await (await client.get("/audiences", headers=headers)).text()
        row = body[body.index('<tr data-audience="ACT__CartAbandon__90m">') :]
        row = row[: row.index("</tr>")]
        assert 'class="num size">2<' in row  # c2 and the <script> customer
        assert "retention@example.com" in row
        assert "+3 / -1" in row  # the last hour ... week of event time, all in one day
        sizes = await (
            await client.get("/audiences/ACT__CartAbandon__90m/sizes.json", headers=headers)
        ).json()
        assert sizes["sizes"] == [1, 2, 2, 1, 2]
        assert sizes["times_ms"][0] == T0 + HOUR_MS
        daily = await (
            await client.get(
                "/audiences/ACT__CartAbandon__90m/sizes.json?resolution=day", headers=headers
            )
        ).json()
        assert daily["sizes"] == [2]

    run_client(console, work)


def test_the_customer_page_searches_by_email_and_shows_the_timeline(tmp_path: Path) -> None:
    console = make_console(tmp_path, _deltas(), _records())

    async def work(client: Client) -> None:
        headers = bearer(VIEWER_TOKEN)
        response = await client.get(
            "/customers", params={"q": " c1@example.COM ", "kind": "email"}, headers=headers
        )
        body = await response.text()
        assert '<h2 id="customer-id">c1</h2>' in body
        changes = re.findall(r'class="change" data-op="(\w+)"[^>]*data-at-ms="(\d+)"', body)
        assert changes == [("enter", str(T0)), ("exit", str(T0 + 3 * HOUR_MS))]
        assert "Product Added" in body and "in[0]@7" in body
        assert format_rfc3339_ms(T0) in body
        assert "Not a member of any audience." in body
        assert "member now of: nothing" in body  # explain's own last line

    run_client(console, work)


def test_the_audience_page_shows_its_yaml_members_and_holdout(tmp_path: Path) -> None:
    console = make_console(tmp_path, _deltas())

    async def work(client: Client) -> None:
        body = await (
            await client.get("/audiences/ACT__CartAbandon__90m", headers=bearer(VIEWER_TOKEN))
        ).text()
        assert "since_last: {event: Product Added, at_least: 90m, less_than: 7d}" in body
        assert 'href="/customers?q=c2"' in body
        assert "A sample of 2 of 2 members" in body
        assert 'id="size-plot"' in body

    run_client(console, work)


def test_health_and_destinations_read_the_admin_ports(tmp_path: Path) -> None:
    telemetry = Telemetry(role="deliver")
    telemetry.set_consumer_lag("g", "d", 0, 12)
    telemetry.destination_request("braze", 200)
    telemetry.destination_request("braze", 429)
    telemetry.deltas_delivered("braze", 40)
    telemetry.deltas_rejected("braze", "unmatched", 2)
    telemetry.identifier_lookup("braze", "A", True, 3)
    telemetry.identifier_lookup("braze", "A", False, 1)
    (tmp_path / "braze-control.yaml").write_text("paused: true\n")
    with AdminServer(telemetry) as admin:
        console = make_console(
            tmp_path,
            _deltas(),
            processes=[
                {
                    "name": "deliver-braze",
                    "role": "deliver",
                    "url": admin.url,
                    "destination": "braze",
                },
                {"name": "gone", "role": "evaluate", "url": "http://127.0.0.1:1"},
            ],
        )

        async def work(client: Client) -> None:
            headers = bearer(VIEWER_TOKEN)
            health = await (await client.get("/health", headers=headers)).text()
            assert 'data-process="deliver-braze"' in health
            assert "d: 12" in health
            assert "unreachable" in health  # the one that is not there
            assert "not ready" in health or "ready" in health
            dest = await (await client.get("/destinations", headers=headers)).text()
            row = dest[dest.index('<tr data-destination="braze">') :]
            row = row[: row.index("</tr>")]
            assert "yes (" in row  # paused by its control file
            assert ">40<" in row and "unmatched: 2" in row and "75.0%" in row
            assert "read-only" in dest
            assert "BRAZE_KEY" not in dest

        run_client(console, work)


def test_a_browsers_own_form_with_a_null_origin_is_accepted_and_another_sites_is_not(
    tmp_path: Path,
) -> None:
    """Under ``Referrer-Policy: no-referrer`` browsers post the console's own forms with
    ``Origin: null``; ``Sec-Fetch-Site`` tells them from another site's."""
    console = make_console(tmp_path, _deltas())
    rebuilt: list[bool] = []
    console.state.rebuild = lambda: rebuilt.append(True)

    async def work(client: Client) -> None:
        operator = bearer(OPERATOR_TOKEN)
        form = {"confirm": "yes", "csrf_token": await _csrf(client, operator)}
        for site in ("cross-site", "same-site"):
            refused = await client.post(
                "/store/rebuild",
                data=form,
                headers={**operator, "Origin": "null", "Sec-Fetch-Site": site},
            )
            assert refused.status == 403
        without = await client.post(
            "/store/rebuild", data={"confirm": "yes"},
            headers={**operator, "Origin": "null", "Sec-Fetch-Site": "same-origin"},
        )  # fmt: skip
        assert without.status == 403  # the token is still needed
        assert not rebuilt
        done = await client.post(
            "/store/rebuild",
            data=form,
            headers={**operator, "Origin": "null", "Sec-Fetch-Site": "same-origin"},
            allow_redirects=False,
        )
        assert done.status == 303 and rebuilt == [True]

    run_client(console, work)


def test_a_changed_audience_file_shows_on_the_next_page(tmp_path: Path) -> None:
    folder = tmp_path / "audiences"
    folder.mkdir()
    source = EXAMPLE_AUDIENCES / "cart_and_checkout.yaml"
    target = folder / "cart_and_checkout.yaml"
    target.write_text(source.read_text())
    console = make_console(tmp_path, _deltas(), audiences=str(folder))

    async def work(client: Client) -> None:
        headers = bearer(VIEWER_TOKEN)
        before = await (await client.get("/audiences", headers=headers)).text()
        assert "ACT__CheckoutAbandon__HighIntent" in before and "expires in a week" not in before
        text = target.read_text().replace(
            "Checkout started, no order for 60 minutes; expires 3 days after the checkout.",
            "Checkout started, no order for 60 minutes; expires in a week.",
        )
        target.write_text(text + "\n# edited\n")  # a different size: changed
        after = await (await client.get("/audiences", headers=headers)).text()
        assert "expires in a week" in after
        (folder / "more.yaml").write_text(
            "name: ACT__Added__Later\nversion: 1\nowner: o@example.com\ndescription: new\n"
            "entry: {happened: {event: X}}\nsticky_for: 1d\n"
        )
        assert "ACT__Added__Later" in await (await client.get("/audiences", headers=headers)).text()

    run_client(console, work)
