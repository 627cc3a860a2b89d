"""What both stand-ins share: fixed-window rate limits, fault switches, the violation
record, the admin endpoints, and running servers in a background thread."""

from __future__ import annotations

import asyncio
import math
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from aiohttp import web

ResetStyle = Literal["epoch", "seconds_left"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FixedWindow:
    """``limit`` units per window of ``window_s`` seconds, windows counted from the
    stand-in's start (the vendors' reset headers name the window's end)."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self.origin = time.time()
        self._window = -1
        self.used = 0

    def admit(self, cost: int, now: float) -> tuple[bool, int, float]:
        """(admitted, remaining, reset epoch)."""
        window = int((now - self.origin) // self.window_s)
        if window != self._window:
            self._window, self.used = window, 0
        reset = self.origin + (window + 1) * self.window_s
        if self.used + cost > self.limit:
            return False, max(0, self.limit - self.used), reset
        self.used += cost
        return True, self.limit - self.used, reset


@dataclass
class Faults:
    """Fault switches, set through ``POST /_standin/faults`` (JSON, any subset):

    ``status_burst: {count, status}`` - the next ``count`` API requests get ``status``;
    ``storm_s`` - every request gets 429 for that many seconds (reset: the storm's end);
    ``down_s`` - every request gets 503 for that many seconds;
    ``slow: {count, ms}`` - the next ``count`` requests wait ``ms`` before answering;
    ``drop_count`` - the next ``count`` requests get their connection closed unanswered;
    ``reject_ids`` - customer ids the stand-in refuses per record (partial errors).
    """

    burst_status: int = 503
    burst_count: int = 0
    storm_until: float = 0.0
    down_until: float = 0.0
    slow_count: int = 0
    slow_ms: int = 0
    drop_count: int = 0
    reject_ids: set[str] = field(default_factory=set)

    def update(self, data: dict[str, Any], now: float) -> None:
        burst = data.get("status_burst")
        if isinstance(burst, dict):
            self.burst_count = int(burst.get("count", 0))
            self.burst_status = int(burst.get("status", 503))
        if "storm_s" in data:
            self.storm_until = now + float(data["storm_s"])
        if "down_s" in data:
            self.down_until = now + float(data["down_s"])
        slow = data.get("slow")
        if isinstance(slow, dict):
            self.slow_count = int(slow.get("count", 0))
            self.slow_ms = int(slow.get("ms", 0))
        if "drop_count" in data:
            self.drop_count = int(data["drop_count"])
        if "reject_ids" in data:
            self.reject_ids = {str(x) for x in data["reject_ids"]}


class StandIn:
    """Base of both stand-ins: the checks every API request goes through.

    Profiles keep, besides their attributes, every value each array attribute ever held
    (:attr:`history`). A remove of a value the profile never had is counted
    (``remove_never_added``); in *strict* mode (``strict=True``, or ``strict`` through
    ``POST /_standin/faults``) it is also a violation: a destination's own behaviour
    would create the profile or leave nothing to remove, and streamsync promises to
    remove only what it added."""

    reset_style: ResetStyle = "epoch"
    header_prefix = "X-RateLimit-"

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        #: profile key -> array attribute -> every value it ever held
        self.history: dict[str, dict[str, set[Any]]] = {}
        self.faults = Faults()
        self.violations: list[dict[str, Any]] = []
        self.counters: Counter[str] = Counter()
        self.blocked_until = 0.0  # the latest reset announced with a 429
        self.lock = asyncio.Lock()

    # -- subclasses --------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    def profiles(self) -> dict[str, Any]:
        raise NotImplementedError

    def clear(self) -> None:
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------

    def violation(self, kind: str, detail: str) -> None:
        self.violations.append({"kind": kind, "detail": detail, "at": time.time()})

    def array_added(self, profile: str, attribute: str, values: list[Any]) -> None:
        """``values`` were put in ``profile``'s array ``attribute``."""
        had = self.history.setdefault(profile, {}).setdefault(attribute, set())
        had.update(v for v in values if isinstance(v, str | int | float | bool))

    def array_removing(self, profile: str, attribute: str, values: list[Any]) -> None:
        """``values`` are about to be removed from ``profile``'s array ``attribute``:
        count (and in strict mode record) those it never had."""
        had = self.history.get(profile, {}).get(attribute, set())
        never = [v for v in values if not isinstance(v, str | int | float | bool) or v not in had]
        if not never:
            return
        self.counters["remove_never_added"] += len(never)
        if self.strict:
            self.violation(
                "remove_never_added", f"{profile}: {attribute} remove {never!r}, never added"
            )

    def rate_headers(self, window: FixedWindow, remaining: int, reset: float) -> dict[str, str]:
        now = time.time()
        # whole seconds, rounded up: a client waiting for the header's time is never early
        value = (
            str(math.ceil(reset)) if self.reset_style == "epoch" else str(math.ceil(reset - now))
        )
        p = self.header_prefix
        return {f"{p}Limit": str(window.limit), f"{p}Remaining": str(remaining), f"{p}Reset": value}

    def rate_limited(self, body: dict[str, Any], window: FixedWindow, reset: float) -> web.Response:
        # The headers carry whole seconds: the reset announced (and enforced) is rounded up.
        if self.reset_style == "seconds_left":
            reset = time.time() + math.ceil(reset - time.time())
        else:
            reset = math.ceil(reset)
        self.blocked_until = max(self.blocked_until, reset)
        return web.json_response(body, status=429, headers=self.rate_headers(window, 0, reset))

    async def gate(
        self, request: web.Request, window: FixedWindow, cost: int, limited_body: dict[str, Any]
    ) -> web.StreamResponse | dict[str, str]:
        """Faults, the 429-reset rule and the rate limit, in that order. Returns the
        response to send instead of processing, or the rate-limit headers to add."""
        now = time.time()
        self.counters["requests"] += 1
        if now < self.blocked_until:
            self.violation(
                "before_reset",
                f"{request.path} arrived {self.blocked_until - now:.3f}s before the 429 reset",
            )
        f = self.faults
        if f.drop_count > 0:
            f.drop_count -= 1
            self.counters["dropped"] += 1
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=599)  # never reaches the client
        if f.slow_count > 0:
            f.slow_count -= 1
            self.counters["slowed"] += 1
            await asyncio.sleep(f.slow_ms / 1000.0)
        if now < f.down_until or f.burst_count > 0:
            status = 503 if now < f.down_until else f.burst_status
            if now >= f.down_until:
                f.burst_count -= 1
            self.counters["server_errors"] += 1
            return web.json_response({"message": "stand-in fault"}, status=status)
        if now < f.storm_until:
            self.counters["rate_limited_storm"] += 1
            return self.rate_limited(limited_body, window, f.storm_until)
        admitted, remaining, reset = window.admit(cost, now)
        if not admitted:
            self.counters["rate_limited"] += 1
            return self.rate_limited(limited_body, window, reset)
        return self.rate_headers(window, remaining, reset)

    # -- admin -------------------------------------------------------------------------

    async def _profiles(self, _request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.profiles()), content_type="application/json")

    async def _report(self, _request: web.Request) -> web.Response:
        report = {
            "violations": self.violations,
            "counters": dict(self.counters),
            "strict": self.strict,
        }
        return web.Response(body=orjson.dumps(report), content_type="application/json")

    async def _faults(self, request: web.Request) -> web.Response:
        data = await request.json()
        if not isinstance(data, dict):
            return web.json_response({"error": "expected a JSON object"}, status=400)
        self.faults.update(data, time.time())
        if "strict" in data:
            self.strict = bool(data["strict"])
        return web.json_response({"ok": True})

    async def _reset(self, _request: web.Request) -> web.Response:
        self.faults = Faults()
        self.violations.clear()
        self.counters.clear()
        self.blocked_until = 0.0
        self.history.clear()
        self.clear()
        return web.json_response({"ok": True})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.add_routes(self.routes())
        app.add_routes(
            [
                web.get("/_standin/profiles", self._profiles),
                web.get("/_standin/report", self._report),
                web.post("/_standin/faults", self._faults),
                web.post("/_standin/reset", self._reset),
            ]
        )
        return app


async def read_json(request: web.Request) -> tuple[Any, bytes]:
    raw = await request.read()
    try:
        return orjson.loads(raw), raw
    except orjson.JSONDecodeError:
        return None, raw


class StandInServer:
    """Runs stand-ins on loopback in a background thread (tests, benchmarks, the demo)::

    with StandInServer({"braze": BrazeStandIn(...), "moengage": MoEngageStandIn(...)}) as s:
        s.urls["braze"]   # http://127.0.0.1:PORT
    """

    def __init__(
        self,
        standins: dict[str, StandIn],
        host: str = "127.0.0.1",
        ports: dict[str, int] | None = None,
    ) -> None:
        self.standins = standins
        self.host = host
        self.ports = ports or {}
        self.urls: dict[str, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runners: list[web.AppRunner] = []
        self._ready = threading.Event()
        self._error: BaseException | None = None

    async def _start(self) -> None:
        for name, standin in self.standins.items():
            runner = web.AppRunner(standin.app(), access_log=None, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, self.host, self.ports.get(name, 0))
            await site.start()
            self._runners.append(runner)
            port = int(runner.addresses[-1][1])
            self.urls[name] = f"http://{self.host}:{port}"

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        for runner in self._runners:
            loop.run_until_complete(runner.cleanup())
        loop.close()

    def start(self) -> StandInServer:
        self._thread = threading.Thread(target=self._run, name="standins", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> StandInServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class StandInAdmin:
    """A small client for the ``/_standin/*`` endpoints."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _call(self, path: str, data: dict[str, Any] | None = None) -> Any:
        body = None if data is None else orjson.dumps(data)
        request = urllib.request.Request(
            self.url + path, data=body, method="GET" if data is None else "POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as response:
            return orjson.loads(response.read())

    def profiles(self) -> Any:
        return self._call("/_standin/profiles")

    def report(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("/_standin/report")
        return result

    def faults(self, **switches: Any) -> None:
        self._call("/_standin/faults", switches)

    def reset(self) -> None:
        self._call("/_standin/reset", {})
