"""``streamsync deliver --config FILE --destination NAME``: keep one destination in sync.

Reads the deltas topic (``deltas.topic``, read committed) in the destination's own
consumer group and delivers until SIGTERM or Ctrl-C, then sends what it can within
``--drain-timeout``, commits, and prints the counts. Every configuration mistake is one
line on stderr and exit status 2; a destination refusing the credentials or the URL is
exit status 1 with nothing committed past it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import orjson

from streamsync.cli.arguments import doc_help, non_negative_int, seconds
from streamsync.config import load_config
from streamsync.destinations.deliver import DeliverLoop, DeliverResult
from streamsync.destinations.sink import DeliverySink
from streamsync.errors import StreamsyncError
from streamsync.observability.service import Observability


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "deliver",
        help="deliver membership deltas to one destination (Braze, MoEngage) until stopped",
        description=doc_help(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, required=True, help="YAML configuration file")
    parser.add_argument(
        "--destination", required=True, help="a name under 'destinations:' in the configuration"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="log the exact requests (secrets redacted) instead of sending them; commits nothing",
    )
    # Finite and not negative: NaN or infinity would never compare as reached.
    parser.add_argument(
        "--idle-timeout",
        type=seconds(allow_zero=True),
        default=0.0,
        help="stop after this many seconds with nothing to do (default 0: run until stopped)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=non_negative_int,
        default=10,
        help="seconds to finish sending buffered changes when stopping (default 10)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log delivery at INFO level")
    parser.set_defaults(func=run_deliver)


def run_deliver(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    loop = DeliverLoop(
        config, args.destination, dry_run=True if args.dry_run else None, progress=_progress
    )
    obs = Observability.start(
        config.observability_for(args.destination),
        role="deliver",
        secrets=loop.client.secret_values(),
    )
    if args.verbose or args.dry_run:  # dry-run requests are logged at INFO
        logging.getLogger("streamsync.deliver").setLevel(logging.INFO)
    loop.observer = obs.telemetry
    loop.health = obs.telemetry.health
    loop.tracing = obs.telemetry.tracing

    def stop(_signum: int, _frame: object) -> None:
        loop.stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    dest = loop.dest
    print(
        f"deliver: {config.deltas.topic} -> {args.destination} ({dest.kind} at {dest.base_url}) "
        f"as {dest.consumer_group(args.destination)}{' [dry run]' if loop.dry_run else ''}",
        file=sys.stderr,
        flush=True,
    )
    try:
        result = loop.run(
            idle_timeout_s=args.idle_timeout or None, drain_timeout_s=args.drain_timeout
        )
    except StreamsyncError as exc:  # reported by streamsync's main, by its group
        exc.within("stopped without committing further")
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        obs.close()
    print_summary(result)
    return 0


def _progress(result: DeliverResult, sink: DeliverySink) -> None:
    stats = sink.stats
    state = "paused" if sink.paused else "failing" if sink.failing else "running"
    sent = (
        f"{stats.would_deliver} changes would be delivered in {stats.dry_run_requests} "
        "requests (dry run)"
        if sink.dry_run
        else f"{stats.delivered_total} changes delivered in {stats.requests} requests"
    )
    print(
        f"deliver: {result.consumed} deltas consumed, {sent}, {sink.buffered} buffered, "
        f"{sum(stats.rejected.values()) + sum(stats.unmatched.values())} dead-lettered, "
        f"{stats.rate_limited} 429s, {stats.retries} retries ({state}, {result.elapsed_s:.0f}s)",
        file=sys.stderr,
        flush=True,
    )


def print_summary(result: DeliverResult) -> None:
    print(orjson.dumps(result.summary()).decode(), flush=True)
    stats = result.stats
    audiences = sorted(set(stats.matched) | set(stats.unmatched))
    for audience in audiences:
        print(
            f"  {audience:<40} match rate {stats.match_rate(audience):6.1%}  "
            f"unmatched {stats.unmatched[audience]}",
            file=sys.stderr,
        )
