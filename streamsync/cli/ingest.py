"""``streamsync ingest``: run the ingest loop, or decode a file offline.

* ``streamsync ingest --config FILE [--bootstrap-servers S] [--idle-timeout 10]
  [--max-records N]`` consumes the configured topics, prints progress (records/s) on
  stderr every few seconds, and per-topic counts and dead letters by reason at the end.
  SIGTERM/SIGINT finish the current batch, commit, and print the summary.
* ``streamsync ingest decode --format F FILE`` decodes JSON lines (or, for Avro formats,
  one plain Avro body per file) without Kafka, printing each event or error by line
  number (``LINE item I`` for an error in item I of a ``{"batch": [...]}`` envelope, as
  the dead letter's index says): for looking at a dead letter or a sample from a producer.
  E-mail addresses and phone numbers are masked, as in the logs (a terminal's scrollback
  and a pasted ticket are not where customers' contact details belong);
  ``--show-personal-data`` prints them as they are.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import orjson

from streamsync.cli.arguments import (
    UserError,
    check_input_file,
    doc_help,
    positive_int,
    seconds,
)
from streamsync.cli.progress import rate_printer
from streamsync.config import check_schema_registry, load_config
from streamsync.errors import StreamsyncError
from streamsync.ingest.avro import FileSchemaRegistry
from streamsync.ingest.config import TopicConfig
from streamsync.ingest.decoder import Decoder, Skipped
from streamsync.ingest.errors import DecodeError
from streamsync.ingest.event import SourcePosition
from streamsync.observability.logs import PERSONAL, Redactor
from streamsync.runtime.ingest_loop import IngestLoop, IngestStats

_FORMATS = ("pipelines_json", "webhook_json", "pipelines_avro", "webhook_avro")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ingest",
        help="consume Customer.io topics into events; bad records go to the dead-letter topic",
        description=doc_help(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="YAML configuration file")
    parser.add_argument("--bootstrap-servers", help="override kafka.bootstrap_servers")
    parser.add_argument(
        "--idle-timeout",
        type=seconds(allow_zero=True),
        default=10.0,
        help="stop after this many seconds without records (0: never; default 10)",
    )
    parser.add_argument("--max-records", type=positive_int, help="stop after this many records")
    parser.add_argument(
        "--progress-interval",
        type=seconds(allow_zero=False),
        default=5.0,
        help="seconds between progress lines",
    )
    parser.set_defaults(func=run_ingest)
    sub = parser.add_subparsers(dest="ingest_command", metavar="SUBCOMMAND")
    decode = sub.add_parser("decode", help="decode a file offline and print events or errors")
    decode.add_argument("--format", required=True, choices=_FORMATS)
    decode.add_argument("--schema-registry", type=Path, help="unused for plain Avro bodies")
    decode.add_argument("file", type=Path, help="JSON lines, or one plain Avro body")
    decode.add_argument(
        "--show-personal-data",
        action="store_true",
        help="print e-mail addresses and phone numbers as they are (default: masked)",
    )
    decode.add_argument(
        "--identity-links",
        action="store_true",
        help="decode anonymous records and aliases as identity links, as replay does "
        "(default: skipped, as the evaluate service does)",
    )
    decode.set_defaults(func=run_decode)


def _progress(out: TextIO) -> Callable[[IngestStats], None]:
    def line(stats: IngestStats, rate: float) -> str:
        return (
            f"ingest: {stats.records} records in {stats.elapsed_s:.0f}s "
            f"({rate:,.0f} records/s), {stats.dead_lettered} dead letters"
        )

    return rate_printer(out, line)


def print_summary(stats: IngestStats, out: TextIO) -> None:
    rate = stats.records / stats.elapsed_s if stats.elapsed_s > 0 else 0.0
    print(
        f"ingest stopped ({stats.stopped_by or 'error'}) after {stats.elapsed_s:.1f}s: "
        f"{stats.records} records ({rate:,.0f}/s)",
        file=out,
    )
    print(f"{'topic':<32} {'decoded':>9} {'skipped':>9} {'dead':>7}", file=out)
    for name, topic in stats.topics.items():
        dead = sum(topic.dead_lettered.values())
        print(f"{name:<32} {topic.decoded:>9} {topic.skipped_no_customer:>9} {dead:>7}", file=out)
    reasons = stats.dead_letters_by_reason
    if reasons:
        print("dead letters by reason:", file=out)
        for reason, count in reasons.most_common():
            print(f"  {reason:<24} {count:>7}", file=out)


def run_ingest(args: argparse.Namespace) -> int:
    if args.config is None:
        raise UserError("--config FILE is required")
    config = load_config(args.config)
    kafka = config.kafka
    kafka.client_config()  # a named SASL password is missing: say so now
    if args.bootstrap_servers:
        kafka = kafka.model_copy(update={"bootstrap_servers": args.bootstrap_servers})
    loop = IngestLoop(
        config.ingest,
        kafka,
        progress=_progress(sys.stderr),
        progress_interval_s=args.progress_interval,
    )

    def stop(_signum: int, _frame: object) -> None:
        loop.stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    print(
        f"ingest: consuming {', '.join(t.name for t in config.ingest.topics)} from "
        f"{kafka.bootstrap_servers} as {config.ingest.group_id}",
        file=sys.stderr,
        flush=True,
    )
    try:
        stats = loop.run(max_records=args.max_records, idle_timeout_s=args.idle_timeout or None)
    except StreamsyncError as exc:  # reported by streamsync's main, by its group
        exc.within("stopped without committing")
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print_summary(stats, sys.stdout)
    return 0


def run_decode(args: argparse.Namespace) -> int:
    check_input_file(args.file, "")
    topic = TopicConfig.model_validate({"name": str(args.file), "format": args.format})
    if args.schema_registry is not None:
        check_schema_registry(args.schema_registry, "--schema-registry")
    registry = FileSchemaRegistry.from_path(args.schema_registry) if args.schema_registry else None
    decoder = Decoder(topic, registry, links=args.identity_links)
    data = args.file.read_bytes()
    values = [data] if topic.is_avro else [line for line in data.splitlines() if line.strip()]
    failures = 0
    for number, value in enumerate(values, start=1):
        source = SourcePosition(str(args.file), 0, number)
        for outcome in decoder.decode_all(value, None, source):
            if isinstance(outcome, DecodeError):
                failures += 1
                item = "" if outcome.index is None else f" item {outcome.index}"
                print(f"{number}{item}: ERROR {outcome.reason.value}: {outcome.detail}")
            elif isinstance(outcome, Skipped):
                print(f"{number}: skipped ({outcome.reason})")
            else:
                shown = {k: getattr(outcome, k) for k in outcome.__slots__ if k != "source"}
                if not args.show_personal_data:
                    shown = _masked(None, shown)
                print(f"{number}: {orjson.dumps(shown).decode()}")
    return 1 if failures else 0


#: Fields holding a contact detail, wherever they are (identifiers, traits, properties).
_CONTACT_FIELDS = frozenset({"email", "phone"})


def _masked(key: str | None, value: Any) -> Any:
    """``value`` with contact details masked: a field named ``email`` or ``phone``
    whole, and e-mail addresses and phone numbers in any other text (a customer id that
    is an address too), with the log redactor's patterns."""
    if key is not None and key.lower() in _CONTACT_FIELDS and value is not None:
        return PERSONAL
    if isinstance(value, str):
        return _PATTERNS.text(value)
    if isinstance(value, dict):
        return {k: _masked(str(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(None, item) for item in value]
    return value


#: Masks e-mail addresses and phone numbers (no secrets registered: none are read here).
_PATTERNS = Redactor()
