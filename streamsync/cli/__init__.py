"""The ``streamsync`` command.

Each sub-command group lives in its own module and registers itself through
``register(subparsers)``; this module only assembles them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from streamsync import __version__

#: Modules under ``streamsync.cli`` that contribute sub-commands, in help order.
_COMMAND_MODULES = ("demo", "audiences", "ingest", "deliver", "dev")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamsync",
        description=(
            "Real-time audience sync: Customer.io events on Kafka in, exact audience "
            "membership out to Braze and MoEngage."
        ),
    )
    parser.add_argument("--version", action="version", version=f"streamsync {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"streamsync.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"streamsync.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
