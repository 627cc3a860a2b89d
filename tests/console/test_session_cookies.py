"""Signed session cookies: a sign-in on one console replica is accepted by another with the
same ``auth.session_key``, refused under another key, once tampered with or expired; roles
and CSRF hold for a session carried between replicas."""

from __future__ import annotations

import asyncio
import base64
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from streamsync.console.auth import SESSION_COOKIE, Authenticator, SessionKeyError
from streamsync.console.config import AuthConfig
from streamsync.console.server import Console, create_console
from tests.console.support import ENV, OPERATOR_TOKEN, VIEWER_TOKEN, FakeSources, config

Client = TestClient[Any, Any]
KEY = "k" * 40
OTHER_KEY = "o" * 40
USERS: list[dict[str, Any]] = [
    {"name": "vera", "role": "viewer", "token": {"env": "VIEWER_TOKEN"}},
    {"name": "otto", "role": "operator", "token": {"env": "OPERATOR_TOKEN"}},
]


def _console(tmp: Path, key: str | None) -> Console:
    base = config(tmp)
    assert base.console is not None
    auth: dict[str, Any] = {"users": USERS}
    if key is not None:
        auth["session_key"] = {"env": "SESSION_KEY"}
    section = base.console.model_copy(update={"auth": AuthConfig.model_validate(auth)})
    env = {**ENV, **({"SESSION_KEY": key} if key is not None else {})}
    sources = FakeSources([], {})
    sources.config = base.model_copy(update={"console": section})
    made = create_console(
        sources.config,
        sources=sources,
        feed=False,
        env=env,
    )
    made.store.set_state("live")
    return made


async def _sign_in(client: TestClient[Any, Any], token: str) -> str:
    form = await (await client.get("/login")).text()
    found = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert found
    signed = await client.post(
        "/login", data={"secret": token, "csrf_token": found[1]}, allow_redirects=False
    )
    assert signed.status == 303
    return signed.cookies[SESSION_COOKIE].value


async def _csrf(client: TestClient[Any, Any], cookie: str) -> str:
    page = await client.get("/health", cookies={SESSION_COOKIE: cookie})
    assert page.status == 200
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', await page.text())
    assert found
    return found[1]


def _run(consoles: list[Console], work: Any) -> None:
    async def main() -> None:
        clients = [TestClient(TestServer(c.app)) for c in consoles]
        for client in clients:
            await client.start_server()
        try:
            await work(*clients)
        finally:
            for client in clients:
                await client.close()

    asyncio.run(main())


def test_a_session_from_one_replica_is_accepted_by_another_with_the_same_key(
    tmp_path: Path,
) -> None:
    first, second = _console(tmp_path, KEY), _console(tmp_path, KEY)
    other = _console(tmp_path, OTHER_KEY)
    rebuilt: list[str] = []
    second.state.rebuild = lambda: rebuilt.append("second")

    async def work(
        a: TestClient[Any, Any], b: TestClient[Any, Any], c: TestClient[Any, Any]
    ) -> None:
        operator = await _sign_in(a, OPERATOR_TOKEN)
        page = await b.get("/audiences", cookies={SESSION_COOKIE: operator})
        assert page.status == 200 and "otto" in await page.text()
        # Another key: not signed in there.
        refused = await c.get("/audiences", cookies={SESSION_COOKIE: operator})
        assert refused.status == 401
        # CSRF: the token one replica put in its page is good on the other, and still
        # required there; a token of another session is not.
        token = await _csrf(a, operator)
        assert token == await _csrf(b, operator)
        missing = await b.post(
            "/store/rebuild", data={"confirm": "yes"}, cookies={SESSION_COOKIE: operator}
        )
        assert missing.status == 403
        again = await _sign_in(a, OPERATOR_TOKEN)  # the same user, a new session
        crossed = await b.post(
            "/store/rebuild",
            data={"confirm": "yes", "csrf_token": token},
            cookies={SESSION_COOKIE: again},
        )
        assert crossed.status == 403
        assert not rebuilt
        done = await b.post(
            "/store/rebuild",
            data={"confirm": "yes", "csrf_token": token},
            cookies={SESSION_COOKIE: operator},
            allow_redirects=False,
        )
        assert done.status == 303 and rebuilt == ["second"]
        # Roles travel with the session: a viewer signed in on one replica cannot act
        # on the other.
        viewer = await _sign_in(a, VIEWER_TOKEN)
        viewer_token = await _csrf(b, viewer)
        as_viewer = await b.post(
            "/store/rebuild",
            data={"confirm": "yes", "csrf_token": viewer_token},
            cookies={SESSION_COOKIE: viewer},
        )
        assert as_viewer.status == 403 and "operator" in await as_viewer.text()
        assert rebuilt == ["second"]
        # Signing out clears the cookie.
        out = await a.post(
            "/logout", data={"csrf_token": token}, cookies={SESSION_COOKIE: operator},
            allow_redirects=False,
        )  # fmt: skip
        assert out.status == 303
        assert out.cookies[SESSION_COOKIE].value == ""

    _run([first, second, other], work)


def test_without_a_key_each_process_signs_with_its_own(tmp_path: Path) -> None:
    first, second = _console(tmp_path, None), _console(tmp_path, None)
    assert not first.auth.shared_key

    async def work(a: TestClient[Any, Any], b: TestClient[Any, Any]) -> None:
        cookie = await _sign_in(a, VIEWER_TOKEN)
        assert (await a.get("/audiences", cookies={SESSION_COOKIE: cookie})).status == 200
        assert (await b.get("/audiences", cookies={SESSION_COOKIE: cookie})).status == 401

    _run([first, second], work)


class _Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _auth(clock: _Clock, key: str = KEY, users: list[dict[str, Any]] = USERS) -> Authenticator:
    section = AuthConfig.model_validate(
        {"users": users, "session_key": {"env": "SESSION_KEY"}, "session_hours": 1}
    )
    return Authenticator(section, {**ENV, "SESSION_KEY": key}, clock=clock)


def _cookie(auth: Authenticator, token: str) -> str:
    principal = auth.check_token(token)
    assert principal is not None
    return auth.open_session(principal)


def _who(auth: Authenticator, cookie: str) -> Any:
    return auth.authenticate({}, {SESSION_COOKIE: cookie}, "127.0.0.1")


def test_an_expired_cookie_is_refused(tmp_path: Path) -> None:
    clock = _Clock()
    auth = _auth(clock)
    cookie = _cookie(auth, VIEWER_TOKEN)
    clock.now += 3599
    held = _who(auth, cookie)
    assert held is not None and (held.name, held.role, held.method) == ("vera", "viewer", "session")
    clock.now += 1
    assert _who(auth, cookie) is None


def _tampered(cookie: str, **changes: Any) -> str:
    payload, _, signature = cookie.partition(".")
    data = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(changes)
    forged = base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()
    return f"{forged}.{signature}"


def test_a_tampered_or_malformed_cookie_is_refused() -> None:
    clock = _Clock()
    auth = _auth(clock)
    cookie = _cookie(auth, VIEWER_TOKEN)
    assert _who(auth, cookie) is not None
    # A viewer's cookie made an operator's, its expiry pushed back, or its user changed.
    assert _who(auth, _tampered(cookie, r="operator")) is None
    assert _who(auth, _tampered(cookie, exp=int(clock.now) + 10**6)) is None
    assert _who(auth, _tampered(cookie, u="otto")) is None
    payload, _, signature = cookie.partition(".")
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    for bad in [f"{payload}.{flipped}", payload, f".{signature}", "", "..", "é.é", "x" * 5000]:
        assert _who(auth, bad) is None
    # Signed with another key.
    assert _who(_auth(clock, OTHER_KEY), cookie) is None


def test_a_cookie_is_believed_only_while_its_user_has_that_role() -> None:
    clock = _Clock()
    cookie = _cookie(_auth(clock), OPERATOR_TOKEN)
    demoted = [USERS[0], {**USERS[1], "role": "viewer"}]
    assert _who(_auth(clock, users=demoted), cookie) is None
    assert _who(_auth(clock, users=[USERS[0]]), cookie) is None
    assert _who(_auth(clock), cookie) is not None


def test_a_short_session_key_is_refused() -> None:
    with pytest.raises(SessionKeyError, match="at least 32"):
        _auth(_Clock(), key="short")
