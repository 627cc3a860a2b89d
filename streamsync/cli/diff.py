"""``streamsync audiences diff``: what new audience definitions would change, before
deploying them.

The computation is :mod:`streamsync.audiences.diff`; reading what evaluate committed is
:mod:`streamsync.runtime.snapshot`. This module parses, checks the user's input before
any work, and prints.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from streamsync.audiences.definition import Audience
from streamsync.audiences.diff import (
    DEFAULT_SAMPLE,
    DiffBuilder,
    DiffReport,
    membership,
    report_lines,
)
from streamsync.audiences.loader import check_audience_count, load_audiences
from streamsync.cli.arguments import UserError, check_input_file, non_negative_int, seconds
from streamsync.config import AppConfig, load_config
from streamsync.ingest.event import Event
from streamsync.ingest.jsonl import InputPolicy, LineError, read_events

#: How long reading the cluster may take by default (the input topics are read whole).
DEFAULT_TIMEOUT_S = 600.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    diff = sub.add_parser(
        "diff",
        help="preview new audience definitions: who would enter and leave (writes nothing)",
        description="Compare new audience definitions with the running ones (the "
        "configuration's evaluate.audiences) and print, per audience, what a restart of "
        "evaluate with them would emit: how many enter and leave, the size before and "
        "after, a sample of customers each way, and what history is missing. Reads the "
        "membership table, the changelog's clocks and the input topics without joining "
        "a group or writing anything; with --input, replays a JSON-lines file instead.",
    )
    diff.add_argument("new", metavar="NEW_DEFINITIONS_PATH", help="audience file or directory")
    diff.add_argument(
        "--config",
        type=Path,
        required=True,
        metavar="FILE",
        help="the running configuration: its evaluate.audiences are the current "
        "definitions, its Kafka settings the cluster to read",
    )
    diff.add_argument(
        "--input",
        metavar="FILE.jsonl",
        help="JSON-lines file of Customer.io records to replay instead of reading Kafka: "
        "the current membership is replay of the current definitions, at the file's end",
    )
    diff.add_argument(
        "--sample",
        type=non_negative_int,
        default=DEFAULT_SAMPLE,
        metavar="N",
        help=f"customers shown each way per audience (default {DEFAULT_SAMPLE})",
    )
    diff.add_argument("--json", action="store_true", help="print one JSON object")
    diff.add_argument(
        "--timeout",
        type=seconds(allow_zero=False, maximum=24 * 3600.0),
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"give up reading Kafka after this long (default {DEFAULT_TIMEOUT_S:.0f})",
    )
    diff.set_defaults(func=_diff)


def _diff(args: argparse.Namespace) -> int:
    prog: str = args.command_prog
    if args.input is not None:
        check_input_file(args.input, "--input")
    config = load_config(args.config)
    if config.evaluate is None:
        raise UserError(f"{args.config}: no evaluate section (evaluate.audiences)")
    new, problems, _checked = check_audience_count(args.new)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        # As validate prints them: every problem, then what it means.
        for problem in problems:
            print(problem)
        print(f"{prog}: {len(errors)} error(s) in {args.new}: nothing compared", file=sys.stderr)
        return 1
    current = load_audiences(config.evaluate.audiences)
    lateness = config.evaluate.allowed_lateness_ms
    if args.input is not None:
        report = _file_report(args.input, config, current, new, lateness)
    else:
        from streamsync.runtime.snapshot import predict, read_snapshot

        def progress(line: str) -> None:
            print(f"{prog}: {line}", file=sys.stderr, flush=True)

        snapshot = read_snapshot(config, timeout_s=args.timeout, progress=progress)
        report = predict(snapshot, current, new, allowed_lateness_ms=lateness)
    _print(report, args.sample, as_json=args.json)
    return 0


def _file_report(
    path: str,
    config: AppConfig,
    current: Sequence[Audience],
    new: Sequence[Audience],
    lateness: int,
) -> DiffReport:
    """The file's records replayed with both definition sets, the clock at the file's
    end (its newest record), as ``replay`` stands it."""
    policy = InputPolicy.from_config(config.ingest)
    events: list[Event] = []
    undecodable = 0
    with Path(path).open("rb") as handle:
        for item in read_events(handle, path, policy=policy):
            if isinstance(item, Event):
                events.append(item)
            elif isinstance(item, LineError):
                undecodable += 1
    builder = DiffBuilder(current, new, allowed_lateness_ms=lateness)
    told = membership(current, events, allowed_lateness_ms=lateness)
    builder.add(told, builder.evaluate(events))
    notes = []
    if undecodable:
        notes.append(f"{undecodable:,} line(s) of {path} could not be decoded (skipped)")
    newest = max((e.timestamp_ms for e in events), default=None)
    source = f"replay of {path} ({len(events):,} records) with the current definitions"
    return builder.report(source, [] if newest is None else [newest], notes)


def _print(report: DiffReport, sample: int, *, as_json: bool) -> None:
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(report.to_json(sample), option=orjson.OPT_INDENT_2))
        sys.stdout.buffer.write(b"\n")
        sys.stdout.buffer.flush()
        return
    for line in report_lines(report, sample):
        print(line)


__all__ = ["register"]
