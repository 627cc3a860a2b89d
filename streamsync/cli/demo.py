"""``streamsync demo``: the whole pipeline on the local default, end to end.

The CLI loads this module for every command to build its parser, so the demo (and the
broker, generator and stand-ins it brings) is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import sys

from streamsync.cli.arguments import fraction, int_between, seconds

#: The demo keeps every generated record in memory (about 3 KB each) to compare the live
#: result with an offline replay, so its size is bounded; ``dev generate`` and ``replay``
#: stream and take any size.
MAX_EVENTS = 1_000_000
MAX_CUSTOMERS = 1_000_000
_WHY = "the demo keeps every record in memory; use dev generate and replay for more"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "demo",
        help="run the pipeline end to end on a local Kafka broker with synthetic traffic",
        description="Start a local Kafka broker (or use KAFKA_BOOTSTRAP_SERVERS), produce a "
        "synthetic Customer.io stream with some malformed records, ingest it, evaluate the "
        "example audiences, deliver the membership changes to local Braze and MoEngage "
        "stand-ins, and check the live deltas and the stand-ins' profiles against an "
        "offline replay. Stops by itself; exit status 1 if either differs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--customers",
        type=int_between(1, MAX_CUSTOMERS, _WHY),
        default=2_000,
        help=f"distinct customers (at most {MAX_CUSTOMERS:,})",
    )
    parser.add_argument(
        "--events",
        type=int_between(1, MAX_EVENTS, _WHY),
        default=50_000,
        help=f"records to generate (at most {MAX_EVENTS:,})",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed for the stream")
    parser.add_argument(
        "--bad-fraction",
        type=fraction,
        default=0.002,
        help="fraction of extra malformed records mixed into the stream",
    )
    parser.add_argument(
        "--idle-timeout",
        type=seconds(allow_zero=False, maximum=3600.0),
        default=5.0,
        help="seconds without new records after which ingest, and then delivery, stop "
        "(more than 0, at most 3600)",
    )
    parser.add_argument(
        "--deliver",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="deliver the membership changes to local Braze and MoEngage stand-ins and "
        "check their profiles (--no-deliver stops after evaluation)",
    )
    parser.add_argument(
        "--console",
        action="store_true",
        help="afterwards, serve the web console on the demo's data on loopback, with a "
        "token generated for the run and printed once, until Ctrl-C",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from streamsync.config import AppConfig
    from streamsync.dev.demo import DemoResult, print_report, run_demo

    reported: list[bool] = []

    def console(result: DemoResult, config: AppConfig) -> None:
        from streamsync.dev.demo_console import serve_demo_console

        print_report(result, sys.stdout)
        reported.append(True)
        serve_demo_console(config, sys.stdout)

    result = run_demo(
        customers=args.customers,
        events=args.events,
        seed=args.seed,
        bad_fraction=args.bad_fraction,
        idle_timeout_s=args.idle_timeout,
        deliver=args.deliver,
        out=sys.stdout,
        then=console if args.console else None,
    )
    if not reported:
        print_report(result, sys.stdout)
    return 0 if result.passed else 1
