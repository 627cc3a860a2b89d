"""The console assembled and served: configuration in, a running aiohttp site out.

:func:`create_console` builds everything from the configuration (secrets read, store
feed started) and is what tests use with their own :class:`~.sources.Sources`;
:class:`ConsoleServer` binds the address and serves until stopped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from streamsync.config import AppConfig, ConfigError
from streamsync.console.app import build_app
from streamsync.console.auth import Authenticator
from streamsync.console.config import ConsoleConfig
from streamsync.console.feed import DeltasFeed
from streamsync.console.pages import ConsoleState
from streamsync.console.sources import KafkaSources, Sources
from streamsync.console.store import ConsoleStore
from streamsync.errors import UserMistake


class ConsoleBindError(UserMistake):
    """The console could not bind its address (port in use, bad host): ``console.host``
    or ``console.port`` is to change (exit status 2)."""


@dataclass
class Console:
    app: web.Application
    state: ConsoleState
    auth: Authenticator
    store: ConsoleStore
    feed: DeltasFeed | None


def console_section(config: AppConfig, source: str) -> ConsoleConfig:
    if config.console is None:
        raise ConfigError(
            f"{source}: no console: section (the console needs at least console.auth; "
            "see docs/console.md)"
        )
    return config.console


def create_console(
    config: AppConfig,
    *,
    sources: Sources | None = None,
    feed: bool = True,
    env: Mapping[str, str] | None = None,
    source: str = "<config>",
) -> Console:
    section = console_section(config, source)
    auth = Authenticator(section.auth, env)  # secrets first: a missing one stops here
    store = ConsoleStore(section.history_days)
    deltas_feed = DeltasFeed(config, store) if feed else None
    state = ConsoleState(
        config=config,
        console=section,
        store=store,
        sources=sources or KafkaSources(config, section.read_timeout_s, section.preview_timeout_s),
        csrf_for=auth.csrf_token,
        rebuild=deltas_feed.rebuild if deltas_feed is not None else (lambda: None),
    )
    app = build_app(state, auth)
    if deltas_feed is not None:

        async def start_feed(_app: web.Application) -> None:
            deltas_feed.start()

        async def stop_feed(_app: web.Application) -> None:
            deltas_feed.stop()

        app.on_startup.append(start_feed)
        app.on_cleanup.append(stop_feed)
    return Console(app, state, auth, store, deltas_feed)


class ConsoleServer:
    """Serve a :class:`Console` on ``console.host:console.port`` (port 0: a free one)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        host = self.console.state.console.host
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        section = self.console.state.console
        self._runner = web.AppRunner(self.console.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, section.host, section.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ConsoleBindError(
                f"cannot serve the console on {section.host}:{section.port}: {exc.strerror or exc}"
            ) from None
        sockets = getattr(site._server, "sockets", None) or ()
        self.port = int(sockets[0].getsockname()[1]) if sockets else section.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
