"""``streamsync validate``, ``replay`` and ``explain``: audiences on files, offline."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

import orjson

from streamsync.audiences.durations import MINUTE, format_duration
from streamsync.audiences.loader import check_audiences, load_audiences
from streamsync.audiences.replay import ReplaySummary, replay
from streamsync.cli.arguments import UserError, check_input_file, duration_ms, rfc3339_ms
from streamsync.deltas.record import MembershipDelta, format_rfc3339_ms
from streamsync.ingest.event import Event
from streamsync.ingest.jsonl import LineError, Skipped, open_events, read_events

#: Bad lines printed in full before the rest are only counted.
_SHOWN_ERRORS = 10


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    validate = sub.add_parser(
        "validate",
        help="check audience definitions and report every error with file and line",
        description="Check audience YAML files (a file or a directory of them). Prints "
        "every error and warning as FILE:LINE: severity: reason; exit status 1 on errors, "
        "2 when a path cannot be read as YAML text at all.",
    )
    validate.add_argument("path", help="audience file or directory")
    validate.set_defaults(func=_validate)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--audiences", required=True, help="audience file or directory")
    common.add_argument(
        "--events",
        required=True,
        help="JSON-lines file of Customer.io records (Data Pipelines and reporting webhooks, "
        "in arrival order); - for stdin",
    )
    common.add_argument(
        "--until",
        type=rfc3339_ms,
        metavar="RFC3339",
        help="RFC 3339 instant the clock stands at: later records are ignored and every "
        "deadline at or before it fires (default: the latest record timestamp)",
    )
    common.add_argument(
        "--allowed-lateness",
        type=duration_ms,
        default=5 * MINUTE,
        metavar="DURATION",
        help="how far behind the newest record a record may arrive and still be applied "
        "in event-time order (default: 5m)",
    )

    rep = sub.add_parser(
        "replay",
        parents=[common],
        help="evaluate audiences over a file of records and print the membership deltas",
        description="Replay a file through the audience engine, exactly as the live "
        "consumer would, and write membership deltas as JSON lines to stdout. Progress "
        "and a summary go to stderr.",
    )
    rep.add_argument("--quiet", action="store_true", help="no progress or summary on stderr")
    rep.set_defaults(func=_replay)

    exp = sub.add_parser(
        "explain",
        parents=[common],
        help="show one customer's membership timeline and the records behind each change",
        description="Why did this customer get this push? Replays the file and prints "
        "every membership change of one customer, with the records that caused it.",
    )
    exp.add_argument("--customer", required=True, help="customer key (userId)")
    exp.add_argument("--audience", help="only this audience")
    exp.set_defaults(func=_explain)


def _validate(args: argparse.Namespace) -> int:
    audiences, problems = check_audiences(args.path)
    for problem in problems:
        print(problem)
    errors = sum(1 for p in problems if p.severity == "error")
    warnings = len(problems) - errors
    print(
        f"{len(audiences)} audience(s) checked: {errors} error(s), {warnings} warning(s)",
        file=sys.stderr,
    )
    return 1 if errors else 0


class _ErrorReporter:
    """Prints the first few undecodable lines in full; the summary counts the rest."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.seen = 0

    def __call__(self, item: LineError) -> None:
        self.seen += 1
        if self.seen <= _SHOWN_ERRORS:
            print(f"streamsync: {self.source}: {item}", file=sys.stderr)


def _records(args: argparse.Namespace) -> Iterator[Event | LineError | Skipped]:
    handle = open_events(args.events)  # checked by _check_events before any work
    try:
        yield from read_events(handle, str(args.events))
    finally:
        if handle is not sys.stdin.buffer:
            handle.close()


def _print_summary(summary: ReplaySummary) -> None:
    err = sys.stderr
    print(
        f"streamsync replay: {summary.lines:,} lines, {summary.events:,} events, "
        f"{summary.skipped_no_customer:,} without customer key (skipped), "
        f"{summary.duplicates:,} duplicates (counted once), "
        f"{summary.corrections:,} late corrections, "
        f"{sum(summary.errors.values()):,} undecodable",
        file=err,
    )
    for reason, count in sorted(summary.errors.items()):
        print(f"  undecodable {reason}: {count:,}", file=err)
    for (audience, op), count in sorted(summary.deltas.items()):
        print(f"  {audience} {op}: {count:,}", file=err)


def _check_events(args: argparse.Namespace) -> None:
    if args.events != "-":
        check_input_file(args.events, "--events")


def _replay(args: argparse.Namespace) -> int:
    _check_events(args)
    audiences = load_audiences(args.audiences)
    summary = ReplaySummary()
    out = sys.stdout.buffer
    for delta in replay(
        audiences,
        _records(args),
        until_ms=args.until,
        allowed_lateness_ms=args.allowed_lateness,
        on_error=_ErrorReporter(str(args.events)),
        progress=None if args.quiet else sys.stderr,
        summary=summary,
    ):
        out.write(orjson.dumps(delta.to_json()) + b"\n")
    out.flush()
    if not args.quiet:
        _print_summary(summary)
    return 0


def _explain(args: argparse.Namespace) -> int:
    _check_events(args)
    audiences = load_audiences(args.audiences)
    if args.audience is not None and args.audience not in {a.name for a in audiences}:
        raise UserError(f"no audience named {args.audience!r} in {args.audiences}")
    records: dict[str, Event] = {}
    history: list[Event] = []

    def keep(event: Event) -> None:
        if event.customer_id == args.customer:
            history.append(event)
            if event.record_id is not None:
                records.setdefault(event.record_id, event)

    deltas: list[MembershipDelta] = [
        d
        for d in replay(
            audiences,
            _records(args),
            until_ms=args.until,
            allowed_lateness_ms=args.allowed_lateness,
            on_event=keep,
            progress=sys.stderr,
        )
        if d.customer_id == args.customer and (args.audience is None or d.audience == args.audience)
    ]
    print(f"customer {args.customer}: {len(history)} record(s), {len(deltas)} change(s)")
    if not deltas:
        print("  never entered" + (f" {args.audience}" if args.audience else " any audience"))
    members: set[str] = set()
    for delta in deltas:
        arrow = "ENTER" if delta.op == "enter" else "EXIT "
        print(f"{format_rfc3339_ms(delta.at_ms)}  {arrow} {delta.audience}  (seq {delta.seq})")
        (members.add if delta.op == "enter" else members.discard)(delta.audience)
        for rid in delta.record_ids:
            event = records.get(rid)
            if event is None:
                print(f"    record {rid}")
                continue
            where = f"line {event.source.offset}" if event.source else "?"
            gap = delta.at_ms - event.timestamp_ms
            after = "" if gap == 0 else f", {_span(gap)} before this change"
            print(
                f"    because of {event.kind} {event.name!r} at "
                f"{format_rfc3339_ms(event.timestamp_ms)} ({where}, record {rid}{after})"
            )
    print("member now of: " + (", ".join(sorted(members)) or "nothing"))
    return 0


def _span(ms: int) -> str:
    return format_duration(ms)
