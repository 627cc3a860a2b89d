"""``streamsync dev``: a local Kafka broker and synthetic data, for development without Docker.

``dev kafka start`` runs the same broker the tests use (``streamsync.dev.broker``), so
what works against it locally works in CI; ``dev generate`` writes the seeded synthetic
Customer.io stream (``streamsync.dev.synthetic``) that the demo and benchmarks replay.

The CLI loads this module for every command to build its parser, so the development
tools are imported inside the command functions only: ``streamsync evaluate`` never
loads the broker or the generator.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from streamsync.cli.arguments import (
    check_output_file,
    fraction,
    int_between,
    non_negative_int,
    one_line,
    port,
    rfc3339_ms,
    seconds,
)

#: The generator holds a few hundred bytes per customer in memory.
MAX_GENERATED_CUSTOMERS = 10_000_000
#: Below this many records ``dev generate`` finishes too fast for progress to help.
_PROGRESS_THRESHOLD = 100_000
#: ``dev generate --start`` default: the generator's own ``DEFAULT_START_MS``, written out
#: so building the parser does not load the generator (tests/cli/test_dev.py checks both
#: agree). argparse parses a string default with the option's ``type``.
DEFAULT_START = "2026-01-01T00:00:00.000Z"


def _kafka_version(text: str) -> str:
    """A Kafka release number such as ``4.1.1``: it becomes a cache directory and a Maven
    property. The broker module is loaded only when the option is given."""
    from streamsync.dev.broker import check_kafka_version

    try:
        return check_kafka_version(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers: Any) -> None:
    """Add ``dev kafka fetch``, ``dev kafka start`` and ``dev generate``."""
    dev = subparsers.add_parser(
        "dev",
        help="local development helpers: a Kafka broker without Docker, synthetic events",
        description="Local development helpers: a Kafka broker without Docker, synthetic events.",
    )
    dev_sub = dev.add_subparsers(dest="dev_command", metavar="COMMAND")
    dev_sub.required = True

    kafka = dev_sub.add_parser(
        "kafka",
        help="a single-node Apache Kafka broker from Maven Central jars (needs Java 17+)",
        description=(
            "A single-node Apache Kafka (KRaft) broker run from jars fetched with Maven "
            "and cached in ~/.cache/streamsync (or $STREAMSYNC_CACHE_DIR). Needs Java 17+."
        ),
    )
    kafka_sub = kafka.add_subparsers(dest="kafka_command", metavar="COMMAND")
    kafka_sub.required = True
    version_help = "Apache Kafka version (default: the one pinned in streamsync/dev/pom.xml)"

    fetch = kafka_sub.add_parser(
        "fetch",
        help="download the broker jars into the cache now (otherwise done on first start)",
        description="Download the broker jars into the cache and print the directory.",
    )
    fetch.add_argument("--version", type=_kafka_version, default=None, help=version_help)
    fetch.set_defaults(func=_kafka_fetch)

    start = kafka_sub.add_parser(
        "start",
        help="run a broker on 127.0.0.1 until Ctrl-C or SIGTERM",
        description=(
            "Run a throw-away broker on 127.0.0.1 until Ctrl-C or SIGTERM, then stop it "
            "cleanly and delete its data. Prints KAFKA_BOOTSTRAP_SERVERS=host:port on "
            "standard output once the broker answers."
        ),
    )
    start.add_argument(
        "--port", type=port, default=9092, help="client port to listen on (default: %(default)s)"
    )
    start.add_argument("--version", type=_kafka_version, default=None, help=version_help)
    start.add_argument(
        "--startup-timeout",
        type=seconds(allow_zero=False),
        default=120.0,
        help="seconds to wait for the broker to answer (default: %(default)s)",
    )
    start.set_defaults(func=_kafka_start)

    generate = dev_sub.add_parser(
        "generate",
        help="write a synthetic Customer.io event stream as JSON lines",
        description=(
            "Write a deterministic synthetic Customer.io stream (Data Pipelines records and "
            "reporting webhooks) as JSON lines, in arrival order: about 1% of records "
            "arrive up to 2 minutes late and 0.5% are re-sent duplicates. The same "
            "arguments always produce the same bytes."
        ),
    )
    generate.add_argument(
        "--customers",
        type=int_between(1, MAX_GENERATED_CUSTOMERS, "the generator keeps every customer"),
        required=True,
        help=f"number of distinct customers (at most {MAX_GENERATED_CUSTOMERS:,})",
    )
    generate.add_argument(
        "--events",
        type=non_negative_int,
        required=True,
        help="number of records to write (duplicates included, bad records not)",
    )
    generate.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    generate.add_argument(
        "--start",
        type=rfc3339_ms,
        default=DEFAULT_START,
        metavar="RFC3339",
        help="start of the 180-day window (default: %(default)s)",
    )
    generate.add_argument(
        "--out",
        default="-",
        metavar="FILE",
        help="output file, or - for standard output (default: %(default)s)",
    )
    generate.add_argument(
        "--bad-fraction",
        type=fraction,
        default=0.0,
        metavar="F",
        help="also interleave malformed records after this fraction of records (0-1), "
        "to exercise the dead-letter path (default: %(default)s)",
    )
    generate.set_defaults(func=_generate)

    standins = dev_sub.add_parser(
        "stand-ins",
        help="local Braze and MoEngage API stand-ins (for tests, the demo, docker-compose)",
        description=(
            "Run local stand-ins of the Braze and MoEngage APIs until Ctrl-C or SIGTERM; "
            "prints BRAZE_URL=... and MOENGAGE_URL=... once they listen. Keys accepted: "
            "$STANDIN_BRAZE_API_KEY, $STANDIN_MOENGAGE_APP_ID, $STANDIN_MOENGAGE_API_KEY."
        ),
    )
    standins.add_argument("--host", default="127.0.0.1", help="address (default: %(default)s)")
    standins.add_argument("--braze-port", type=port, default=0, help="default: any free port")
    standins.add_argument("--moengage-port", type=port, default=0, help="default: any free port")
    standins.set_defaults(func=_standins)


def _kafka_fetch(args: argparse.Namespace) -> int:
    from streamsync.dev.broker import KafkaFetchError, default_kafka_version, fetch_kafka_jars

    try:
        libs = fetch_kafka_jars(args.version, progress=sys.stderr)
    except KafkaFetchError as exc:
        print(f"{args.command_prog}: {one_line(str(exc))}", file=sys.stderr)
        return 1
    version = args.version or default_kafka_version()
    print(f"streamsync: Apache Kafka {version} jars are in {libs}", file=sys.stderr)
    print(libs)
    return 0


class _Stop(BaseException):
    """Raised from the SIGTERM/SIGINT handler so a signal during start-up also unwinds
    through ``LocalBroker.start``'s cleanup (the JVM runs in its own session and would
    otherwise outlive us)."""


def _kafka_start(args: argparse.Namespace) -> int:
    from streamsync.dev.broker import BrokerStartError, KafkaFetchError, LocalBroker

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise _Stop(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    broker = LocalBroker(
        version=args.version, port=args.port, startup_timeout=args.startup_timeout,
        progress=sys.stderr,
    )  # fmt: skip
    try:
        try:
            broker.start()
        except (BrokerStartError, KafkaFetchError) as exc:
            print(f"{args.command_prog}: {one_line(str(exc))}", file=sys.stderr)
            return 1
        print(
            f"streamsync: Apache Kafka {broker.version} is ready on "
            f"{broker.bootstrap_servers} (data in {broker.data_dir}); Ctrl-C stops it",
            file=sys.stderr,
            flush=True,
        )
        print(f"KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}", flush=True)
        idle = threading.Event()
        while broker.is_running():
            idle.wait(0.5)
        print("streamsync: the Kafka broker exited unexpectedly", file=sys.stderr)
        print(f"--- {broker.log_file} (tail) ---\n{_log_tail(broker.log_file)}", file=sys.stderr)
        return 1
    except _Stop:
        print("streamsync: stopping the Kafka broker", file=sys.stderr, flush=True)
        return 0
    finally:
        # Ignore further signals while stopping: a second Ctrl-C must not leave the JVM.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _generate(args: argparse.Namespace) -> int:
    from streamsync.dev.synthetic import generate_records, mix_bad_records, write_jsonl

    check_output_file(args.out, "--out")
    records = generate_records(args.customers, args.events, seed=args.seed, start_ms=args.start)
    stream = mix_bad_records(records, args.bad_fraction, seed=args.seed)
    started = time.monotonic()
    total = args.events

    def progress(lines: int) -> None:
        elapsed = max(time.monotonic() - started, 1e-9)
        print(
            f"streamsync: {lines:,} lines ({min(lines, total) * 100 // max(total, 1)}%), "
            f"{lines / elapsed:,.0f} lines/s",
            file=sys.stderr,
            flush=True,
        )

    show = total >= _PROGRESS_THRESHOLD
    written = write_jsonl(stream, args.out, progress=progress if show else None)
    if args.out != "-" or show:
        where = "standard output" if args.out == "-" else args.out
        print(
            f"streamsync: wrote {written:,} lines ({written - total:,} bad) to {where} "
            f"in {time.monotonic() - started:.1f}s",
            file=sys.stderr,
        )
    return 0


def _standins(args: argparse.Namespace) -> int:
    from streamsync.dev.standins.runner import StandInOptions, serve

    return serve(
        StandInOptions(host=args.host, braze_port=args.braze_port, moengage_port=args.moengage_port)
    )


def _log_tail(log_file: Path, lines: int = 40) -> str:
    try:
        text = log_file.read_text("utf-8", errors="replace")
    except OSError as exc:
        return f"(unreadable: {exc})"
    return "\n".join(text.splitlines()[-lines:])
