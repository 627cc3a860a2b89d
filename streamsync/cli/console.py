"""``streamsync console --config FILE``: the web console for the people who own the audiences.

Serves the pages of docs/console.md on ``console.host:console.port`` (loopback unless
configured) until SIGTERM or Ctrl-C. Sign-in is required (``console.auth``: tokens or
passwords from Secrets, or a verified user header from a trusted proxy). On start it
reads the deltas topic into its own size history and says how far it is on stderr.
A configuration without a ``console:`` section, or a Secret that cannot be read, is one
line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

from streamsync.cli.arguments import doc_help
from streamsync.config import load_config
from streamsync.observability.logs import secret_values, setup_logging

#: Seconds between the progress lines while the size history is built.
PROGRESS_EVERY_S = 5.0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "console",
        help="serve the web console (audiences, customers, destinations, health)",
        description=doc_help(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, required=True, help="YAML configuration file")
    parser.set_defaults(func=run_console)


def run_console(args: argparse.Namespace) -> int:
    # Loaded here: building the parser for other commands does not load the web stack.
    from streamsync.console.server import ConsoleServer, console_section, create_console

    config = load_config(args.config)
    console_section(config, str(args.config))
    setup_logging(
        config.observability.log_format,
        config.observability.log_level,
        secrets=secret_values(config),
    )
    console = create_console(config, source=str(args.config))
    server = ConsoleServer(console)
    asyncio.run(_serve(server, args.command_prog))
    return 0


def _session_note(console: Any) -> str:
    """Said at start when sign-ins are signed with a key made by this process: they end
    with a restart, and another replica refuses them (docs/console.md)."""
    if console.auth.shared_key or not (console.auth.token_enabled or console.auth.basic_enabled):
        return ""
    return "; no console.auth.session_key: sign-ins last until this process stops"


async def _serve(server: Any, prog: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    store = server.console.store
    section = server.console.state.console
    print(
        f"{prog}: serving on {server.url} (bound to {section.host}); "
        f"reading {server.console.state.config.deltas.topic} into the size history"
        + _session_note(server.console),
        file=sys.stderr,
        flush=True,
    )
    last_state = ""
    try:
        while not stop.is_set():
            status = store.status()
            if status.state != "live" or last_state != "live":
                detail = f" ({status.error})" if status.error else ""
                if status.state == "building":
                    detail = f": {status.deltas:,} of about {status.target:,} deltas read"
                elif status.state == "live":
                    detail = f": {status.deltas:,} deltas read, following the topic"
                print(f"{prog}: size history {status.state}{detail}", file=sys.stderr, flush=True)
                last_state = status.state
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PROGRESS_EVERY_S)
    finally:
        print(f"{prog}: stopping", file=sys.stderr, flush=True)
        await server.stop()
