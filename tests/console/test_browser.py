"""The console in a real browser against a real broker: Debian's Chromium driven by
Playwright (``executable_path``: Playwright's own browser builds are never fetched), over
synthetic traffic that the evaluate application turned into deltas on the local Kafka.

Each page loads without a script error or a CSP violation, the audience plot holds the
sizes replay gives for the same records, a customer search shows replay's timeline for
that customer, a ``<script>`` customer id is shown as text, and a viewer cannot act.
Every wait is on a condition (an element, an attribute), never a sleep.

Chromium comes from ``scripts/chromium.sh`` (installed with apt-get when absent and
possible); where it cannot be had the tests are skipped with the reason. Set
``STREAMSYNC_CONSOLE_SCREENSHOTS=DIR`` to save the screenshots docs/console.md shows.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamsync.audiences.definition import Audience
from streamsync.audiences.loader import load_audiences
from streamsync.config import load_config
from streamsync.console.feed import wait_live
from streamsync.console.server import ConsoleServer, create_console
from streamsync.deltas.record import MembershipDelta
from streamsync.runtime.app import Application
from streamsync.runtime.snapshot import predict, read_snapshot
from tests.console.support import EVIL, OPERATOR_TOKEN, VIEWER_TOKEN
from tests.runtime.evaluate_support import Stream, replay_deltas, synthetic

pytestmark = [pytest.mark.kafka, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
AUDIENCE = "ACT__CartAbandon__90m"
TIMEOUT_MS = 30_000
PAGES = {
    "/audiences": "Audiences",
    f"/audiences/{AUDIENCE}": AUDIENCE,
    "/customers": "Customer",
    "/destinations": "Destinations",
    "/preview": "Preview a change",
    "/health": "Health",
    "/dead-letters": "Dead letters",
}


def _chromium() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; no browser download)")
    done = subprocess.run(
        [str(ROOT / "scripts" / "chromium.sh")], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"no Chromium for the browser tests: {done.stderr.strip()}")
    return done.stdout.strip().splitlines()[-1]


@dataclass
class Run:
    url: str
    replay: list[MembershipDelta]
    #: the audience with the most changes in the 90 days the store keeps
    audience: str
    customers: list[str]
    #: the console's configuration file
    path: Path


class _Served:
    """The console's server on an event loop in a thread of its own (the browser is
    driven from the test's thread with Playwright's synchronous API)."""

    def __init__(self, server: ConsoleServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ConsoleServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(60)
        return self.server

    def __exit__(self, *_exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _evil_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A customer whose id is markup: a copy of one cart add under that id."""
    template = next(r for r in records if r.get("event") == "Product Added" and r.get("userId"))
    evil = orjson.loads(orjson.dumps(template))
    evil["userId"] = EVIL
    evil["messageId"] = "evil-0001"
    evil.get("context", {}).get("traits", {}).pop("email", None)
    return [evil]


@pytest.fixture(scope="module")
def run(kafka_bootstrap_servers: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("console")
    stream = Stream(kafka_bootstrap_servers)
    records = synthetic(40, 1500, seed=11)
    stream.produce(records + _evil_records(records))
    path = stream.config(tmp)
    Application(load_config(path)).run(idle_timeout_s=2.0)
    until = int(time.time() * 1000)
    data: dict[str, Any] = orjson.loads(path.read_bytes())
    data["console"] = {
        "port": 0,
        "auth": {
            "users": [
                {"name": "vera", "role": "viewer", "token": {"env": "CONSOLE_VIEWER"}},
                {"name": "otto", "role": "operator", "token": {"env": "CONSOLE_OPERATOR"}},
            ]
        },
        "read_timeout_s": 60,
    }
    path.write_bytes(orjson.dumps(data))
    env = {"CONSOLE_VIEWER": VIEWER_TOKEN, "CONSOLE_OPERATOR": OPERATOR_TOKEN}
    console = create_console(load_config(path), env=env)
    expected = replay_deltas(stream.lines, until)
    with _Served(ConsoleServer(console)) as server:
        assert wait_live(console.store, 60), console.store.status()
        assert console.store.status().deltas == len(expected)
        customers = sorted({d.customer_id for d in expected if d.customer_id != EVIL})
        newest = max(d.at_ms for d in expected)
        recent = Counter(d.audience for d in expected if d.at_ms > newest - 90 * 86_400_000)
        yield Run(server.url, expected, recent.most_common(1)[0][0], customers, path)


@pytest.fixture(scope="module")
def browser(run: Run) -> Iterator[Any]:
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield launched
        launched.close()


@dataclass
class Session:
    page: Any
    errors: list[str]
    dialogs: list[str]


def _session(browser: Any, run: Run, token: str) -> Session:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    dialogs: list[str] = []
    page.on(
        "console",
        lambda m: (
            errors.append(f"{m.text} ({m.location.get('url')})") if m.type == "error" else None
        ),
    )
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{run.url}/login")
    page.fill("input[name=secret]", token)
    page.click("form.login button[type=submit]")
    page.wait_for_url(f"{run.url}/audiences")
    return Session(page, errors, dialogs)


@pytest.fixture
def viewer(browser: Any, run: Run) -> Iterator[Session]:
    session = _session(browser, run, VIEWER_TOKEN)
    yield session
    session.page.context.close()


def _shot(page: Any, name: str) -> None:
    folder = os.environ.get("STREAMSYNC_CONSOLE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"console-{name}.png"), full_page=False)


def test_every_page_loads_without_errors(viewer: Session, run: Run) -> None:
    page = viewer.page
    for path, heading in PAGES.items():
        response = page.goto(f"{run.url}{path}")
        assert response is not None and response.status == 200, path
        assert page.locator("h1").first.inner_text() == heading
        assert page.locator("header .user").inner_text() == "vera"
    page.goto(f"{run.url}/audiences")
    page.wait_for_selector(f'tr[data-audience="{AUDIENCE}"] .plot[data-loaded="true"]')
    _shot(page, "audiences")
    page.goto(f"{run.url}/health")
    _shot(page, "health")
    page.goto(f"{run.url}/destinations")
    _shot(page, "destinations")
    assert not viewer.errors, viewer.errors  # a CSP violation is a console error too


def _replay_sizes(deltas: list[MembershipDelta], ends: list[int]) -> list[int]:
    """Members of the audience at each instant of ``ends``, from replay's deltas."""
    changes = sorted((d.at_ms, 1 if d.op == "enter" else -1) for d in deltas)
    sizes, size, i = [], 0, 0
    for end in ends:
        while i < len(changes) and changes[i][0] < end:
            size += changes[i][1]
            i += 1
        sizes.append(size)
    return sizes


def test_the_audience_plot_holds_the_sizes_replay_gives(viewer: Session, run: Run) -> None:
    page = viewer.page
    page.goto(f"{run.url}/audiences/{run.audience}")
    page.wait_for_selector('#size-plot[data-loaded="true"]')
    assert page.locator("#size-plot canvas").count() >= 1  # uPlot drew it
    _shot(page, "audience")
    mine = [d for d in run.replay if d.audience == run.audience]
    for resolution in ("hour", "day"):
        if resolution == "day":
            page.goto(f"{run.url}/audiences/{run.audience}?resolution=day")
            page.wait_for_selector('#size-plot[data-loaded="true"]')
        data = page.evaluate(f"window.streamsyncPlots['{run.audience}/{resolution}']")
        assert data["sizes"], resolution
        assert data["sizes"] == _replay_sizes(mine, data["times_ms"]), resolution
    size_now = page.locator("dd.size").inner_text()
    assert int(size_now.replace(",", "")) == _replay_sizes(mine, [2**62])[0]


def test_a_customer_search_shows_replays_timeline(viewer: Session, run: Run) -> None:
    page = viewer.page
    counts = {c: sum(1 for d in run.replay if d.customer_id == c) for c in run.customers}
    customer = max(run.customers, key=lambda c: (counts[c], c))
    page.goto(f"{run.url}/customers")
    page.fill("input[name=q]", customer)
    page.click("form.search button[type=submit]")
    page.wait_for_selector("#customer-id")
    assert page.locator("#customer-id").inner_text() == customer
    rows = page.locator("tr.change").evaluate_all(
        "rows => rows.map(r => [r.dataset.audience, r.dataset.op, +r.dataset.atMs, +r.dataset.seq])"
    )
    expected = [[d.audience, d.op, d.at_ms, d.seq] for d in run.replay if d.customer_id == customer]
    assert sorted(rows) == sorted(expected)
    assert len(rows) == counts[customer] > 0
    _shot(page, "customer")
    assert not viewer.errors, viewer.errors


def test_a_script_customer_id_is_shown_as_text(viewer: Session, run: Run) -> None:
    page = viewer.page
    page.goto(f"{run.url}/customers")
    page.fill("input[name=q]", EVIL)
    page.click("form.search button[type=submit]")
    page.wait_for_selector("#customer-id")
    assert page.locator("#customer-id").inner_text() == EVIL
    assert page.locator("tr.change").count() == sum(1 for d in run.replay if d.customer_id == EVIL)
    assert page.evaluate("document.querySelectorAll('script:not([src])').length") == 0
    assert not viewer.dialogs  # the alert never ran
    assert not viewer.errors, viewer.errors


def test_a_viewer_cannot_rebuild_and_a_request_without_csrf_is_refused(
    viewer: Session, run: Run, browser: Any
) -> None:
    page = viewer.page
    page.goto(f"{run.url}/health")
    assert page.locator("form.confirm button").is_disabled()
    token = page.locator("form.confirm input[name=csrf_token]").input_value()
    status = page.evaluate(
        """async (token) => (await fetch('/store/rebuild', {method: 'POST',
             headers: {'X-CSRF-Token': token, 'Content-Type': 'application/x-www-form-urlencoded'},
             body: 'confirm=yes'})).status""",
        token,
    )
    assert status == 403
    operator = _session(browser, run, OPERATOR_TOKEN)
    try:
        no_csrf = operator.page.evaluate(
            """async () => (await fetch('/store/rebuild', {method: 'POST',
                 headers: {'Content-Type': 'application/x-www-form-urlencoded'},
                 body: 'confirm=yes'})).status"""
        )
        assert no_csrf == 403
    finally:
        operator.page.context.close()


CHANGED_CART = """\
name: ACT__CartAbandon__90m
version: 2
owner: retention@example.com
description: Added to cart, no order for 30 minutes.
entry:
  since_last: {event: Product Added, at_least: 30m, less_than: 7d}
exit:
  occurred_since_last: {event: Order Completed, since: {event: Product Added}}
"""


def test_preview_shows_audiences_diff_on_the_running_data(viewer: Session, run: Run) -> None:
    page = viewer.page
    page.goto(f"{run.url}/preview")
    page.fill("textarea[name=definition]", CHANGED_CART)
    page.click("#preview-form button[type=submit]")
    page.wait_for_selector("#preview-result, #preview-error", timeout=120_000)
    assert page.locator("#preview-error").count() == 0, page.locator("#preview-error").inner_text()
    # The same prediction as streamsync audiences diff on the same cluster.
    config = load_config(run.path)
    assert config.evaluate is not None
    audiences = load_audiences(config.evaluate.audiences)
    changed = [
        a.model_copy(update={"version": 2, "entry": _thirty_minutes(a)})
        if a.name == AUDIENCE
        else a
        for a in audiences
    ]
    report = predict(
        read_snapshot(config, timeout_s=120),
        audiences,
        changed,
        allowed_lateness_ms=config.evaluate.allowed_lateness_ms,
    )
    result = page.locator("#preview-result")
    assert result.get_attribute("data-enter") == str(sum(len(a.enter) for a in report.audiences))
    assert result.get_attribute("data-leave") == str(sum(len(a.leave) for a in report.audiences))
    cart = next(a for a in report.audiences if a.name == AUDIENCE)
    row = page.locator(f'tr[data-audience="{AUDIENCE}"]')
    assert row.locator(".before").inner_text() == f"{cart.size_before:,}"
    assert row.locator(".after").inner_text() == f"{cart.size_after:,}"
    _shot(page, "preview")
    # Invalid YAML: the validator's line, on the page.
    page.fill("textarea[name=definition]", "name: [unclosed")
    page.click("#preview-form button[type=submit]")
    page.wait_for_selector("#preview-error")
    assert "not valid YAML" in page.locator("#preview-error").inner_text()
    # The refusal is a 422, which the browser notes; nothing else went wrong.
    others = [e for e in viewer.errors if "status of 422" not in e]
    assert not others, others


def _thirty_minutes(audience: Audience) -> Any:
    entry = audience.entry
    assert entry.since_last is not None
    since = entry.since_last.model_copy(update={"at_least": 30 * 60_000})
    return entry.model_copy(update={"since_last": since})
