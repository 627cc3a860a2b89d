"""``streamsync destinations pause|resume|detach|resync|rollout|status``: control a
running destination from anywhere that reaches Kafka.

Each command writes one record to the destination's control topic
(``<deliver group>.control``, compacted); every deliver replica of the destination reads
it and applies it within about a second, whichever pod, however many replicas.

  pause     stop sending to the destination (or one --audience); deltas wait in Kafka
  resume    send again: lifts a pause, and re-attaches a detached audience (backfilled)
  detach    remove the audience's values (or every audience's) from exactly the
            profiles they were acknowledged on, and send nothing more for it
  resync    send the whole desired state again (to the destination, or one --audience)
  rollout   override the configured cohort: --percent P [--customers ID,...], or --clear
  status    per audience: desired vs acknowledged, the group's lag, paused state, and
            each running replica's last error

A misspelt destination or audience is one line and exit status 2; Kafka not answering
is exit status 1.
"""

from __future__ import annotations

import argparse
import getpass
import time
from pathlib import Path
from typing import Any

from streamsync.cli.arguments import doc_help
from streamsync.config import load_config
from streamsync.destinations import operations
from streamsync.errors import UserMistake

_ACTIONS: dict[str, str] = {
    "pause": "stop sending to a destination or one of its audiences",
    "resume": "send again (lifts a pause, re-attaches a detached audience)",
    "detach": "remove an audience's values (or all) from the profiles they are on",
    "resync": "send the whole desired state again",
}


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"a percentage is 0 to 100, not {text}")
    return value


def _common(parser: argparse.ArgumentParser, audience: bool = True) -> None:
    parser.add_argument("--config", type=Path, required=True, help="YAML configuration file")
    parser.add_argument(
        "--destination", required=True, help="a name under 'destinations:' in the configuration"
    )
    if audience:
        parser.add_argument("--audience", help="only this audience (default: every audience)")


def register(subparsers: Any) -> None:
    group = subparsers.add_parser(
        "destinations",
        help="pause, resume, detach, resync, roll out or inspect a running destination",
        description=doc_help(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = group.add_subparsers(dest="destinations_command", metavar="COMMAND")
    sub.required = True
    for action, text in _ACTIONS.items():
        parser = sub.add_parser(action, help=text, description=text)
        _common(parser)
        parser.set_defaults(func=_action, action=action)
    rollout = sub.add_parser(
        "rollout",
        help="override the cohort and percentage the destination receives",
        description="Override the configured rollout of the destination (or of one "
        "--audience): --percent P, with --customers ID,ID always included; --clear goes "
        "back to the configuration. Raising it backfills the newly included, lowering it "
        "detaches the excluded.",
    )
    _common(rollout)
    choice = rollout.add_mutually_exclusive_group(required=True)
    choice.add_argument("--percent", type=_percent, help="share of all customers, 0 to 100")
    choice.add_argument("--clear", action="store_true", help="back to the configuration")
    rollout.add_argument(
        "--customers", default="", help="comma-separated customer ids always included"
    )
    rollout.set_defaults(func=_rollout)
    state = sub.add_parser(
        "status",
        help="desired vs acknowledged per audience, lag, paused state, last errors",
        description="Read the membership table, the destination's acknowledged and "
        "control topics and its group's offsets, and print per audience what the "
        "destination should hold and what it confirmed.",
    )
    _common(state, audience=False)
    state.set_defaults(func=_status)


def _by() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def _action(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    print(operations.apply(config, args.destination, args.action, args.audience, by=_by()))
    return 0


def _rollout(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    customers = [c.strip() for c in args.customers.split(",") if c.strip()]
    if args.clear and customers:
        raise UserMistake("--customers goes with --percent, not --clear")
    line = operations.set_rollout(
        config, args.destination, args.audience, None if args.clear else args.percent,
        customers, by=_by(),
    )  # fmt: skip
    print(line)
    return 0


def _status(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    result = operations.status(config, args.destination)
    lag = "never committed" if result.lag is None else f"{result.lag} deltas"
    print(f"{result.name}: {result.paused}, lag {lag}, {len(result.view.replicas)} replicas")
    if result.desired is None:
        print("  no membership table yet: desired state unknown")
    print(f"  {'audience':<40} {'desired':>9} {'acknowledged':>12} {'pending':>8}")
    for audience in result.audiences:
        desired = "-" if result.desired is None else str(result.desired[audience])
        print(
            f"  {audience:<40} {desired:>9} {result.acknowledged[audience]:>12} "
            f"{result.pending[audience]:>8}"
        )
    for line in result.replica_lines(int(time.time() * 1000)):
        print(f"  {line}")
    return 0
