"""``streamsync demo --console``: the console on the demo's data, until Ctrl-C.

After the demo has produced, evaluated and delivered, its broker stays up and the
console serves the run's topics on loopback (a free port), so a new user sees every
page with data in it. Sign-in is a bearer token generated for this run: printed once,
with the URL, on the demo's own output and nowhere else (it reaches the console through
an environment of the demo's own, as the stand-ins' keys reach delivery, never through
the process environment, a file or a log line). The signed-in user is an operator, so
every page shows what it can do.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable
from typing import TextIO

from streamsync.config import AppConfig
from streamsync.console.config import AuthConfig, ConsoleConfig, ConsoleUser
from streamsync.console.feed import wait_live
from streamsync.console.server import ConsoleServer, create_console
from streamsync.credentials import Credentials
from streamsync.resources import project_path

#: The variable, in the demo's own environment only, the console reads the token from.
TOKEN_VARIABLE = "STREAMSYNC_DEMO_CONSOLE_TOKEN"
#: How long the console's store may take to read the demo's deltas before the URL is
#: printed anyway (the pages say how far the build is).
LIVE_WAIT_S = 60.0


def demo_console_config(config: AppConfig) -> AppConfig:
    """``config`` with a ``console:`` section: loopback, a free port, one operator whose
    token is :data:`TOKEN_VARIABLE` of the demo's environment."""
    section = ConsoleConfig(
        host="127.0.0.1",
        port=0,
        auth=AuthConfig(
            users=[ConsoleUser(name="demo", role="operator", token=Credentials(env=TOKEN_VARIABLE))]
        ),
        audiences=project_path("examples", "audiences"),
    )
    return config.model_copy(update={"console": section})


def serve_demo_console(
    config: AppConfig,
    out: TextIO,
    *,
    stop: threading.Event | None = None,
    ready: Callable[[str, str], None] | None = None,
) -> None:
    """Serve the console on ``config``'s topics until Ctrl-C (or ``stop``, for tests);
    ``ready`` is called with the URL and the token once it answers."""
    token = secrets.token_urlsafe(24)
    console = create_console(
        demo_console_config(config), env={TOKEN_VARIABLE: token}, source="streamsync demo"
    )
    server = ConsoleServer(console)

    async def serve() -> None:
        await server.start()
        try:
            await asyncio.to_thread(wait_live, console.store, LIVE_WAIT_S)
            out.write(
                f"\nConsole: {server.url}/ (Ctrl-C to stop)\n"
                f"  sign in with this token, shown once: {token}\n"
                f"  or: curl -H 'Authorization: Bearer <token>' {server.url}/audiences\n"
            )
            out.flush()
            if ready is not None:
                ready(server.url, token)
            if stop is None:
                await asyncio.Event().wait()  # until Ctrl-C cancels it
            else:
                await asyncio.to_thread(stop.wait)
        finally:
            await server.stop()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        out.write("Console stopped.\n")
