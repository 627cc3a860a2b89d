"""``streamsync validate``, ``replay`` and ``explain``: audiences on files, offline."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson

from streamsync.audiences.engine import DEFAULT_ALLOWED_LATENESS_MS
from streamsync.audiences.loader import (
    AudienceDefinitionError,
    AudienceFileError,
    check_audience_count,
    load_audiences,
)
from streamsync.audiences.replay import ReplaySummary, replay
from streamsync.cli import diff
from streamsync.cli.arguments import (
    UserError,
    check_input_file,
    duration_ms,
    positive_int,
    rfc3339_ms,
    seconds,
)
from streamsync.config import AppConfig, load_config
from streamsync.deltas.audit import (
    MAX_RECORDS,
    AuditProgress,
    audit_customer,
)
from streamsync.deltas.membership import (
    MembershipTable,
    MembersProgress,
    MembersTopicMissing,
    read_customer_members,
)
from streamsync.deltas.record import MembershipDelta, format_rfc3339_ms
from streamsync.deltas.timeline import kafka_position, timeline_lines
from streamsync.identity.config import IdentityConfig
from streamsync.identity.resolver import IdentityResolver, IdentityStats
from streamsync.ingest.event import Event
from streamsync.ingest.jsonl import InputPolicy, LineError, Skipped, open_events, read_events
from streamsync.kafka.reader import TIMEOUT

#: Bad lines printed in full before the rest are only counted.
_SHOWN_ERRORS = 10
#: Live explain's default bounds on reading the input topics.
DEFAULT_MAX_RECORDS = 10_000_000
DEFAULT_TIMEOUT_S = 120.0


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

    rep = sub.add_parser(
        "replay",
        help="evaluate audiences over a file of records and print the membership deltas",
        description="Replay a file through the audience engine, exactly as the live "
        "consumer would, and write membership deltas as JSON lines to stdout. Progress "
        "and a summary go to stderr.",
    )
    _file_arguments(rep, required=True)
    rep.add_argument("--quiet", action="store_true", help="no progress or summary on stderr")
    rep.set_defaults(func=_replay)

    exp = sub.add_parser(
        "explain",
        help="show one customer's membership timeline and the records behind each change",
        description="Why did this customer get this push? Prints every membership change "
        "of one customer, with the records that caused it: from Kafka (--config: first "
        "the audiences the customer is a member of now, from the membership table, then "
        "the deltas evaluate wrote, and their records in the input topics), or by "
        "replaying a file (--audiences and --events).",
    )
    exp.add_argument("--customer", required=True, help="customer key (as on the deltas)")
    exp.add_argument("--audience", help="only this audience")
    _file_arguments(exp, required=False)
    live = exp.add_argument_group("reading Kafka (--config without --events)")
    live.add_argument(
        "--max-records",
        type=positive_int,
        metavar="N",
        help=f"read at most N input records looking for the qualifying ones "
        f"(default {DEFAULT_MAX_RECORDS:,})",
    )
    live.add_argument(
        "--timeout",
        type=seconds(allow_zero=False, maximum=24 * 3600.0),
        metavar="SECONDS",
        help=f"give up reading after this long (default {DEFAULT_TIMEOUT_S:.0f})",
    )
    exp.set_defaults(func=_explain)

    group = sub.add_parser(
        "audiences",
        help="audience definitions against the running service (diff)",
        description="Audience definitions against what the evaluate service runs.",
    )
    commands = group.add_subparsers(dest="audiences_command", metavar="COMMAND")
    commands.required = True
    diff.register(commands)


_CONFIG_HELP = (
    "configuration file: its ingest topic settings (identity, size, clock skew) decode "
    "the file, its identity: section says which ids are linked to a person (default: "
    "anonymousId and alias links on, email links off), and its evaluate.allowed_lateness "
    "is the default lateness, as in the live run"
)


def _file_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """The file-mode options of ``replay`` and ``explain``."""
    config_help = _CONFIG_HELP
    if not required:
        config_help = (
            "configuration file: without --events, the cluster, deltas topic and input "
            "topics to read; with --events, " + _CONFIG_HELP.removeprefix("configuration file: ")
        )
    parser.add_argument("--config", type=Path, metavar="FILE", help=config_help)
    parser.add_argument("--audiences", required=required, help="audience file or directory")
    parser.add_argument(
        "--events",
        required=required,
        help="JSON-lines file of Customer.io records (Data Pipelines and reporting webhooks, "
        "in arrival order); - for stdin",
    )
    parser.add_argument(
        "--until",
        type=rfc3339_ms,
        metavar="RFC3339",
        help="RFC 3339 instant the clock stands at: later records are ignored and every "
        "deadline at or before it fires (default: the latest record timestamp)",
    )
    parser.add_argument(
        "--allowed-lateness",
        type=duration_ms,
        metavar="DURATION",
        help="how far behind the newest record a record may arrive and still be applied "
        "in event-time order (default: evaluate.allowed_lateness of --config, else 5m)",
    )


def _validate(args: argparse.Namespace) -> int:
    _audiences, problems, checked = check_audience_count(args.path)
    for problem in problems:
        print(problem)
    errors = sum(1 for p in problems if p.severity == "error")
    warnings = len(problems) - errors
    print(
        f"{checked} audience(s) checked: {errors} error(s), {warnings} warning(s)",
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


def _records(
    args: argparse.Namespace, config: AppConfig | None
) -> Iterator[Event | LineError | Skipped]:
    policy = None if config is None else InputPolicy.from_config(config.ingest)
    links = _identity(config).resolves
    handle = open_events(args.events)  # checked by _file_setup before any work
    try:
        yield from read_events(handle, str(args.events), policy=policy, links=links)
    finally:
        if handle is not sys.stdin.buffer:
            handle.close()


def _identity(config: AppConfig | None) -> IdentityConfig:
    """The configuration's ``identity:`` section, or its defaults without one."""
    return IdentityConfig() if config is None else config.identity


def _identity_line(stats: IdentityStats) -> str:
    return (
        f"  identity: {stats.ids_linked:,} ids linked, "
        f"{stats.records_forwarded:,} records attributed through a link, "
        f"{stats.conflicting_links:,} conflicting links ignored, "
        f"{stats.ids_held:,} ids never linked ({stats.records_held:,} records, no deltas), "
        f"{stats.records_expired:,} held records dropped at the horizon"
    )


def _print_summary(summary: ReplaySummary) -> None:
    err = sys.stderr
    print(
        f"streamsync replay: {summary.lines:,} lines, {summary.events:,} events, "
        f"{sum(summary.skipped.values()):,} skipped, "
        f"{summary.duplicates:,} duplicates (counted once), "
        f"{summary.late:,} late (applied at their time), "
        f"{summary.too_late:,} too late (applied at the clock), "
        f"{summary.ahead:,} stamped ahead of their receipt (not moving the clock), "
        f"{sum(summary.errors.values()):,} undecodable",
        file=err,
    )
    for reason, count in sorted(summary.skipped.items()):
        print(f"  skipped {reason}: {count:,}", file=err)
    for reason, count in sorted(summary.errors.items()):
        print(f"  undecodable {reason}: {count:,}", file=err)
    if summary.identity != IdentityStats():
        print(_identity_line(summary.identity), file=err)
    for (audience, op), count in sorted(summary.deltas.items()):
        print(f"  {audience} {op}: {count:,}", file=err)


def _file_setup(args: argparse.Namespace) -> tuple[AppConfig | None, int]:
    """Check ``--events`` and ``--config`` before any work; the configuration (if any)
    and the allowed lateness to use."""
    if args.events != "-":
        check_input_file(args.events, "--events")
    config = None if args.config is None else load_config(args.config)
    lateness = args.allowed_lateness
    if lateness is None:
        evaluate = None if config is None else config.evaluate
        lateness = DEFAULT_ALLOWED_LATENESS_MS if evaluate is None else evaluate.allowed_lateness_ms
    return config, lateness


def _replay(args: argparse.Namespace) -> int:
    config, lateness = _file_setup(args)
    audiences = load_audiences(args.audiences)
    summary = ReplaySummary()
    out = sys.stdout.buffer
    for delta in replay(
        audiences,
        _records(args, config),
        until_ms=args.until,
        allowed_lateness_ms=lateness,
        on_error=_ErrorReporter(str(args.events)),
        progress=None if args.quiet else sys.stderr,
        summary=summary,
        identity=_identity(config),
    ):
        out.write(orjson.dumps(delta.to_json()) + b"\n")
    out.flush()
    if not args.quiet:
        _print_summary(summary)
    return 0


def _explain(args: argparse.Namespace) -> int:
    file_mode = args.events is not None or args.audiences is not None
    if file_mode:
        if args.events is None or args.audiences is None:
            raise UserError(
                "--audiences and --events go together (replay a file); "
                "to read Kafka give --config without them"
            )
        if args.max_records is not None or args.timeout is not None:
            raise UserError(
                "--max-records and --timeout apply when reading Kafka "
                "(--config without --audiences and --events)"
            )
        return _explain_file(args)
    if args.config is None:
        raise UserError(
            "give --config FILE to read the deltas on Kafka, "
            "or --audiences and --events to replay a file"
        )
    if args.until is not None or args.allowed_lateness is not None:
        raise UserError("--until and --allowed-lateness apply to a file (--events), not to Kafka")
    return _explain_kafka(args)


def _explain_file(args: argparse.Namespace) -> int:
    config, lateness = _file_setup(args)
    audiences = load_audiences(args.audiences)
    if args.audience is not None and args.audience not in {a.name for a in audiences}:
        raise UserError(f"no audience named {args.audience!r} in {args.audiences}")
    records: dict[str, Event] = {}
    history: list[Event] = []
    resolvers: list[IdentityResolver] = []

    def keep(event: Event) -> None:
        if event.customer_id == args.customer:
            history.append(event)
            if event.record_id is not None:
                records.setdefault(event.record_id, event)

    deltas: list[MembershipDelta] = [
        d
        for d in replay(
            audiences,
            _records(args, config),
            until_ms=args.until,
            allowed_lateness_ms=lateness,
            on_event=keep,
            progress=sys.stderr,
            identity=_identity(config),
            on_resolver=resolvers.append,
        )
        if d.customer_id == args.customer and (args.audience is None or d.audience == args.audience)
    ]
    print(f"customer {args.customer}: {len(history)} record(s), {len(deltas)} change(s)")
    for resolver in resolvers:
        for xid, link in sorted(resolver.links_of(args.customer).items()):
            through = sum(1 for e in history if e.via == xid)
            print(
                f"  linked id {xid} from {format_rfc3339_ms(link.at_ms)} "
                f"(record {link.record_id}): {through} record(s) through it"
            )
    definitions = {a.name: a for a in audiences}
    for line in timeline_lines(deltas, records, audience=args.audience, definitions=definitions):
        print(line)
    return 0


def _explain_kafka(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    definitions = None
    if args.audience is not None and config.evaluate is not None:
        definitions = {a.name: a for a in load_audiences(config.evaluate.audiences)}
        if args.audience not in definitions:
            raise UserError(f"no audience named {args.audience!r} in {config.evaluate.audiences}")
    prog = args.command_prog

    def progress(at: AuditProgress) -> None:
        print(
            f"{prog}: {at.deltas_read:,} deltas and {at.records_read:,} records read, "
            f"{at.found:,} of {at.wanted:,} qualifying records found ({at.elapsed_s:.0f}s)",
            file=sys.stderr,
            flush=True,
        )

    def members_progress(at: MembersProgress) -> None:
        print(
            f"{prog}: {at.records_read:,} records of {config.deltas.members} read "
            f"({at.elapsed_s:.0f}s)",
            file=sys.stderr,
            flush=True,
        )

    max_records = DEFAULT_MAX_RECORDS if args.max_records is None else args.max_records
    timeout_s = DEFAULT_TIMEOUT_S if args.timeout is None else args.timeout
    deadline = time.monotonic() + timeout_s
    # An unreachable or refusing cluster (exit 1) and a question this configuration
    # cannot answer (exit 2) are reported by streamsync's main, by their groups.
    try:
        table: MembershipTable | None = read_customer_members(
            config, args.customer, timeout_s=timeout_s, progress=members_progress
        )
    except MembersTopicMissing:
        table = None
    audit = audit_customer(
        config,
        args.customer,
        audience=args.audience,
        max_records=max_records,
        timeout_s=max(0.0, deadline - time.monotonic()),
        progress=progress,
    )
    # Printed once both are read: a question that cannot be answered (no deltas topic)
    # is then one line, not half an answer.
    complete = _print_members(config.deltas.members, args.customer, args.audience, table)
    topics = ", ".join(audit.input_topics)
    print(
        f"customer {audit.customer}: {len(audit.deltas)} change(s) in {audit.deltas_topic}; "
        f"{len(audit.records)} of {len(audit.wanted)} qualifying record(s) found in {topics}"
    )
    if definitions is None and config.evaluate is not None:
        # The definitions evaluate runs: the deadline behind a change is derived from
        # them. Read after the cluster answered, and optional: without them the
        # timeline still stands, only without reasons.
        try:
            definitions = {a.name: a for a in load_audiences(config.evaluate.audiences)}
        except (AudienceDefinitionError, AudienceFileError) as exc:
            first = str(exc).splitlines()[0]
            print(f"{prog}: no reasons for deadlines: {first}", file=sys.stderr)
    why = {
        MAX_RECORDS: f" (not found in the first {max_records:,} records)",
        TIMEOUT: " (not found before the timeout)",
    }.get(audit.stopped_by or "", " (no longer in the input topics)")
    lines = timeline_lines(
        audit.deltas,
        audit.records,
        audience=args.audience,
        where=kafka_position,
        not_found=why,
        definitions=definitions,
    )
    for line in lines:
        print(line)
    if audit.missing_topics:
        missing = ", ".join(audit.missing_topics)
        print(f"{prog}: input topics not found: {missing}", file=sys.stderr)
    if audit.undecodable_deltas:
        print(
            f"{prog}: {audit.undecodable_deltas:,} of this customer's deltas could not be "
            f"decoded as {config.deltas.format}",
            file=sys.stderr,
        )
    if not complete:
        print(
            f"{prog}: timed out reading {config.deltas.members}: the current memberships "
            "above may be incomplete (raise --timeout)",
            file=sys.stderr,
        )
    if not audit.deltas_complete:
        print(
            f"{prog}: timed out reading {audit.deltas_topic}: the changes above may be "
            "incomplete (raise --timeout)",
            file=sys.stderr,
        )
    return 0 if complete and audit.deltas_complete else 1


def _print_members(
    topic: str, customer: str, audience: str | None, table: MembershipTable | None
) -> bool:
    """The lines before the timeline: the audiences ``customer`` is a member of now (only
    ``audience``, when given) as the membership table says, one per line; ``False``
    when the table was not read to its end."""
    if table is None:
        print(
            f"member now ({topic}): unknown, the topic does not exist "
            "(evaluate creates it when it starts)"
        )
        return True
    members = [
        m for m in table.audiences_of(customer) if audience is None or m.audience == audience
    ]
    if not members:
        print(f"member now ({topic}): " + (f"not of {audience}" if audience else "no audience"))
    else:
        print(f"member now ({topic}): {len(members)} audience(s)")
    for m in members:
        holdout = ", holdout" if m.holdout else ""
        print(f"  {m.audience}  since {m.since}  (version {m.version}, seq {m.seq}{holdout})")
    return table.complete
