"""``streamsync dev stand-ins``: both stand-ins on loopback until SIGTERM or Ctrl-C.

Prints ``BRAZE_URL=...`` and ``MOENGAGE_URL=...`` once both listen, for scripts and the
docker-compose service. The keys they accept come from the environment
(``STANDIN_BRAZE_API_KEY``, ``STANDIN_BRAZE_PARTNER_KEY``, ``STANDIN_BRAZE_DATA_IMPORT_KEY``,
``STANDIN_MOENGAGE_APP_ID``, ``STANDIN_MOENGAGE_API_KEY``)
with development defaults; they are never printed.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import FrameType

from streamsync.dev.standins.braze import BrazeStandIn
from streamsync.dev.standins.common import StandInServer
from streamsync.dev.standins.moengage import MoEngageStandIn

DEFAULT_BRAZE_KEY = "dev-braze-key"
DEFAULT_MOENGAGE_APP_ID = "DEVAPP01"
DEFAULT_MOENGAGE_KEY = "dev-moengage-key"


@dataclass(frozen=True)
class StandInOptions:
    host: str = "127.0.0.1"
    braze_port: int = 0
    moengage_port: int = 0
    braze_limit: int = 3000
    braze_window_s: float = 3.0
    moengage_user_limit: int = 10_000
    moengage_cohort_limit: int = 300
    moengage_window_s: float = 60.0


def build_server(options: StandInOptions, env: Mapping[str, str] | None = None) -> StandInServer:
    environ = os.environ if env is None else env
    braze = BrazeStandIn(
        environ.get("STANDIN_BRAZE_API_KEY", DEFAULT_BRAZE_KEY),
        limit=options.braze_limit,
        window_s=options.braze_window_s,
        partner_key=environ.get("STANDIN_BRAZE_PARTNER_KEY", "dev-braze-partner-key"),
        data_import_key=environ.get("STANDIN_BRAZE_DATA_IMPORT_KEY", "dev-braze-data-import-key"),
    )
    moengage = MoEngageStandIn(
        environ.get("STANDIN_MOENGAGE_APP_ID", DEFAULT_MOENGAGE_APP_ID),
        environ.get("STANDIN_MOENGAGE_API_KEY", DEFAULT_MOENGAGE_KEY),
        user_limit=options.moengage_user_limit,
        cohort_limit=options.moengage_cohort_limit,
        window_s=options.moengage_window_s,
    )
    return StandInServer(
        {"braze": braze, "moengage": moengage},
        host=options.host,
        ports={"braze": options.braze_port, "moengage": options.moengage_port},
    )


def serve(options: StandInOptions) -> int:
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    server = build_server(options)
    try:
        try:
            server.start()
        except OSError as exc:
            print(f"streamsync: cannot listen on {options.host}: {exc.strerror}", file=sys.stderr)
            return 1
        print(f"BRAZE_URL={server.urls['braze']}", flush=True)
        print(f"MOENGAGE_URL={server.urls['moengage']}", flush=True)
        print(
            "streamsync: Braze and MoEngage stand-ins are running; GET /_standin/profiles, "
            "/_standin/report; POST /_standin/faults. Ctrl-C stops them.",
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(0.5):
            pass
        return 0
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
