"""``streamsync evaluate --config FILE``: the evaluate service, until SIGTERM or SIGINT.

Reads the configured input topics as one consumer group, evaluates the audiences per
input partition with persistent state, and writes membership deltas exactly once (see
:mod:`streamsync.runtime.app`). Progress goes to stderr every few seconds; on
SIGTERM/SIGINT the current cycle is committed and the process exits 0. Metrics,
``/healthz`` and ``/readyz`` (ready once the assigned partitions' state is restored) are
served on the admin port of the ``observability:`` section. Configuration
mistakes exit 2 with one line; an unreachable cluster, or state written for other
audience definitions, exits 1; a transaction that can neither commit nor abort (or a
Kafka call that hangs) exits 3, asking the supervisor for a restart. (The groups and
their exit statuses are :mod:`streamsync.errors`', reported by ``streamsync``'s main.)
"""

from __future__ import annotations

import argparse
import faulthandler
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from streamsync.cli.arguments import UserError, doc_help, seconds
from streamsync.cli.progress import rate_printer
from streamsync.config import ConfigError, load_config
from streamsync.observability.logs import secret_values
from streamsync.observability.service import Observability
from streamsync.runtime.app import Application
from streamsync.runtime.observer import EvaluateObserver
from streamsync.runtime.stats import EvaluateStats


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="run the evaluate service: audiences per partition, deltas exactly once",
        description=doc_help(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, required=True, help="YAML configuration file")
    # A positive, finite number of seconds: a negative one printed a line every turn of
    # the loop, and NaN compares false with everything, switching progress off.
    parser.add_argument(
        "--progress-interval",
        type=seconds(allow_zero=False),
        default=5.0,
        help="seconds between progress lines",
    )
    parser.set_defaults(func=run_evaluate)


def _progress(out: TextIO) -> Callable[[EvaluateStats], None]:
    def line(stats: EvaluateStats, rate: float) -> str:
        return (
            f"evaluate: {stats.records:,} records ({rate:,.0f}/s), {stats.deltas:,} deltas, "
            f"{stats.dead_lettered:,} dead letters, {stats.commits:,} commits"
        )

    return rate_printer(out, line)


def run_evaluate(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        if config.evaluate is None:
            raise ConfigError(f"{args.config}: no evaluate section (see the README)")
        config.kafka.client_config()  # a named SASL password is missing: say so now
        app = Application(
            config, progress=_progress(sys.stderr), progress_interval_s=args.progress_interval
        )
    except UnicodeDecodeError:
        raise UserError(f"{args.config}: not a UTF-8 text file") from None
    obs = Observability.start(config.observability, role="evaluate", secrets=secret_values(config))
    app.telemetry = EvaluateObserver.for_settings(obs.telemetry, app.settings, app.audiences)

    def stop(_signum: int, _frame: object) -> None:
        app.stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    # `kill -USR1 <pid>` prints every thread's stack to stderr: for a process that hangs.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    print(
        f"evaluate: {len(app.audiences)} audiences over {', '.join(app.topics)} from "
        f"{config.kafka.bootstrap_servers} as {app.settings.group_id}; deltas to "
        f"{config.deltas.topic} ({config.deltas.format})",
        file=sys.stderr,
        flush=True,
    )
    if config.identity.resolves and not config.identity.live:
        # replay and explain stitch by default: say so here, or their answers and this
        # service's would differ on anonymous records without a word
        print(
            "evaluate: identity links are resolved by replay and explain only "
            "(identity.live is off); this service skips anonymous records and aliases "
            '(README, "Identity")',
            file=sys.stderr,
            flush=True,
        )
    try:
        stats = app.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        obs.close()
    print(
        f"evaluate stopped ({stats.stopped_by}) after {stats.elapsed_s:.1f}s: "
        f"{stats.records:,} records, {stats.deltas:,} deltas, {stats.commits:,} commits, "
        f"{stats.late:,} late records (applied at their time), {stats.too_late:,} too late "
        "(applied at the clock)",
        file=sys.stderr,
    )
    return 0
