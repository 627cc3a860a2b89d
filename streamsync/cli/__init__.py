"""The ``streamsync`` command.

Each sub-command group lives in its own module and registers itself through
``register(subparsers)``; this module assembles them and holds the one handler for the
project's errors, by recovery group (see :mod:`streamsync.errors`): a command raises,
:func:`main` prints one line naming the command and the problem and returns the group's
exit status - 2 for a user mistake (see :mod:`streamsync.cli.arguments`), 1 for something
unavailable after its retries or refused until an operator acts, 3 for a process that
must be restarted. No command maps exceptions to exit statuses itself; one may say what
it had done when the error stopped it (:meth:`~streamsync.errors.StreamsyncError.within`:
``stopped without committing``), printed before the message. No traceback reaches the
user for any of them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from streamsync import __version__
from streamsync.audiences.loader import AudienceDefinitionError, AudienceFileError
from streamsync.cli.arguments import Parser, one_line
from streamsync.config import ConfigError
from streamsync.credentials import CredentialsError
from streamsync.errors import NeedsRestart, StreamsyncError, UserMistake

#: Modules under ``streamsync.cli`` that contribute sub-commands, in help order.
_COMMAND_MODULES = (
    "demo",
    "audiences",
    "ingest",
    "evaluate",
    "deliver",
    "destinations",
    "console",
    "dev",
)

#: The project's exceptions for a mistake in the user's input: one line, exit status 2.
USER_ERRORS: tuple[type[Exception], ...] = (
    UserMistake,
    ConfigError,
    CredentialsError,
    AudienceFileError,
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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


def _redacted(line: str) -> str:
    """``line`` through the log redactor: an error's text may quote what a server sent
    back (a 401 body echoing the ``Authorization`` header), and this line is printed
    outside logging, where the redactor would otherwise never see it. Loaded here, not
    at import, so building the parser does not load the logging stack."""
    from streamsync.observability.logs import REDACTOR

    return REDACTOR.text(line)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status (2 for a user mistake, 1 for something
    unavailable, 3 for a restart; each printed as one line)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    prog: str = getattr(args, "command_prog", parser.prog)
    try:
        rc: int = args.func(args)
    except AudienceDefinitionError as exc:
        # Every problem, each as FILE:LINE: error: reason, then what went wrong.
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{prog}: {len(exc.problems)} error(s) in the audience definitions", file=sys.stderr)
        return 2
    except USER_ERRORS as exc:
        print(f"{prog}: {_redacted(one_line(str(exc)))}", file=sys.stderr)
        return 2
    except StreamsyncError as exc:
        context = f"{exc.context}: " if exc.context else ""
        then = "; exiting to be restarted" if isinstance(exc, NeedsRestart) else ""
        print(f"{prog}: {context}{_redacted(one_line(str(exc)))}{then}", file=sys.stderr)
        return exc.exit_status
    except BrokenPipeError:
        # The reader went away (``streamsync replay ... | head``): stop quietly, and keep
        # the interpreter from complaining when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.filename is None:
            raise
        where = one_line(f"{exc.filename}: {exc.strerror or 'cannot access'}")
        print(f"{prog}: {where}", file=sys.stderr)
        return 2
    return rc


if __name__ == "__main__":
    sys.exit(main())
