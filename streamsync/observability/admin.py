"""The admin HTTP server: ``/metrics`` for Prometheus, ``/healthz`` and ``/readyz`` for probes.

It runs an aiohttp application on its own event loop in a daemon thread, whatever the
runtime does on the main thread (a blocking Kafka loop in evaluate, an asyncio loop in
deliver): probes and scrapes are answered even while the runtime is busy, and the runtime
needs no async code to host it. A stuck runtime is caught by :class:`Health`'s stall
timeout instead.

Responses: ``/healthz`` and ``/readyz`` answer 200 ``ok`` or 503 with the reason as plain
text; ``/metrics`` the Prometheus text format.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from streamsync.errors import UserMistake
from streamsync.observability.metrics import METRICS_CONTENT_TYPE, Telemetry

log = logging.getLogger("streamsync.admin")


class _ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server logger for the admin port: a request that is not valid HTTP (a
    probe misconfigured, a scanner, TLS on the plain port) is the client's mistake and
    was answered 400, so it is one WARNING line naming the client and the first line of
    the reason, never an ERROR with a traceback; any other error keeps its traceback."""

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        error = kwargs.get("exc_info")
        if isinstance(error, HttpProcessingError):
            remote = args[0] if args else "?"
            reason = (str(error.message).strip().splitlines() or ["malformed"])[0]
            self.warning(
                "admin port: malformed request from %s answered %s: %s",
                remote,
                error.code,
                reason,
            )
            return
        self.error(msg, *args, **kwargs)


class AdminServerError(UserMistake):
    """The admin server could not bind its address (port in use, bad host): the
    ``observability.admin`` settings are to change (exit status 2)."""


class AdminServer:
    """Serve one :class:`Telemetry` (and its health). ``port=0`` picks a free port."""

    def __init__(self, telemetry: Telemetry, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._telemetry = telemetry
        self._host = host
        self._port = port
        self._bound_port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port actually bound (after :meth:`start`)."""
        if self._bound_port is None:
            raise RuntimeError("the admin server is not started")
        return self._bound_port

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self._host in ("0.0.0.0", "") else self._host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> AdminServer:
        """Bind and start serving in a background thread; returns once bound."""
        if self._thread is not None:
            raise RuntimeError("the admin server is already started")
        started = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # reported to start() below
                errors.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._cleanup())
                loop.close()

        self._thread = threading.Thread(target=run, name="streamsync-admin", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise AdminServerError(f"admin server did not start within {timeout:.0f}s")
        if errors:
            self._thread.join()
            self._thread = None
            error = errors[0]
            detail = error.strerror if isinstance(error, OSError) and error.strerror else error
            raise AdminServerError(
                f"cannot serve the admin endpoint on {self._host}:{self._port}: {detail}"
            )
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and join the thread (idempotent)."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None
        self._loop = None

    def __enter__(self) -> AdminServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, logger=_ServerLog(log, {})
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        try:
            await site.start()
        except BaseException:
            await self._cleanup()
            raise
        server = site._server
        sockets = getattr(server, "sockets", None) or ()
        self._bound_port = int(sockets[0].getsockname()[1]) if sockets else self._port

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = self._telemetry.render()
        return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def _healthz(self, _request: web.Request) -> web.Response:
        alive, reason = self._telemetry.health.liveness()
        return _probe(alive, reason)

    async def _readyz(self, _request: web.Request) -> web.Response:
        ready, reason = self._telemetry.health.readiness()
        return _probe(ready, reason)


def _probe(ok: bool, reason: str) -> web.Response:
    if ok:
        return web.Response(text="ok\n")
    return web.Response(status=503, text=f"{reason or 'not ready'}\n")
