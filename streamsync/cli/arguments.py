"""How the ``streamsync`` command reports user mistakes, and the argument types that
find them.

One rule for every sub-command: a mistake in what the user asked for prints one line,
``streamsync <command>: <problem>``, on stderr and exits with status 2, as argparse does
for usage errors. Values are checked where they are parsed - the ``type=`` functions
below raise :class:`argparse.ArgumentTypeError` - and what can only be found later (the
content of a file) is raised as :class:`UserError` or one of the project's user-error
exceptions and reported by the single handler in :func:`streamsync.cli.main`.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import stat
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import NoReturn

from streamsync.audiences.durations import format_duration, parse_duration
from streamsync.deltas.record import datetime_to_ms
from streamsync.errors import UserMistake


def one_line(text: str) -> str:
    """``text`` as one printable line: line breaks become spaces and other control
    characters are escaped (a user's argument is echoed; it must not break the line or
    drive the terminal)."""
    words = " ".join(text.split())
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in words)


class UserError(UserMistake):
    """A mistake in what the user asked for: reported as one line, exit status 2."""


_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def doc_help(doc: str | None) -> str:
    """A module docstring as ``--help`` text: reStructuredText markup (double backquotes,
    ``:mod:`x``` roles) is for the API docs, not for a terminal."""
    return _ROLE.sub(r"\1", doc or "").replace("``", "")


class Parser(argparse.ArgumentParser):
    """``argparse`` with one-line errors, and the command's name kept in the parsed
    arguments (``command_prog``) so later errors name the same command."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.set_defaults(command_prog=self.prog)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {one_line(message)} (see {self.prog} --help)\n")


def _integer(text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def port(text: str) -> int:
    value = _integer(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a TCP port (1-65535)")
    return value


def positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must not be negative")
    return value


def int_between(low: int, high: int, why: str = "") -> Callable[[str], int]:
    """A whole number in ``[low, high]``; ``why`` says where the upper bound comes from."""

    def parse(text: str) -> int:
        value = _integer(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"{text} must be at least {low:,}")
        if value > high:
            reason = f" ({why})" if why else ""
            raise argparse.ArgumentTypeError(f"{text} is more than {high:,}{reason}")
        return value

    parse.__name__ = "whole number"
    return parse


def fraction(text: str) -> float:
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction between 0 and 1")
    return value


def seconds(*, allow_zero: bool, maximum: float = 7 * 24 * 3600.0) -> Callable[[str], float]:
    """A finite number of seconds, positive (or zero, when ``allow_zero``), at most a week."""

    def parse(text: str) -> float:
        value = _number(text)
        if value < 0 or (value == 0 and not allow_zero):
            least = "0" if allow_zero else "more than 0"
            raise argparse.ArgumentTypeError(f"{text} seconds: must be {least}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"{text} seconds: at most {maximum:,.0f}")
        return value

    parse.__name__ = "seconds"
    return parse


def rfc3339_ms(text: str) -> int:
    """Epoch milliseconds of an RFC 3339 instant; a timezone is required, as RFC 3339 says."""
    example = "e.g. 2026-01-01T00:00:00Z"
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an RFC 3339 timestamp ({example})"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no timezone; add Z or +HH:MM ({example})")
    return datetime_to_ms(moment)


def duration_ms(text: str) -> int:
    """A non-negative duration with a unit (``5m``), in milliseconds."""
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{format_duration(value)} must not be negative")
    return value


# Paths are checked when the command runs, not while parsing: a command line may be
# parsed where its paths do not exist (docker-compose commands name container paths).


def check_input_file(path: str | Path, what: str) -> Path:
    """An existing file to read (a regular file or a pipe), else :class:`UserError`
    naming ``what`` (the option; empty for a positional argument) and the path."""
    file = Path(path)
    what = f"{what} " if what else ""
    try:
        mode = file.stat().st_mode
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "cannot read"
        raise UserError(f"{what}{path}: {reason}") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"{what}{path}: is a directory, not a file")
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        raise UserError(f"{what}{path}: not a regular file")
    if not os.access(file, os.R_OK):
        raise UserError(f"{what}{path}: permission denied")
    return file


def check_output_file(path: str, what: str) -> str:
    """A file that can be created (its directory exists), or ``-`` for standard output;
    else :class:`UserError`."""
    if path == "-":
        return path
    target = Path(path)
    if path == "" or target.is_dir():
        raise UserError(f"{what} {path!r}: is a directory, not a file")
    parent = target.parent
    if not parent.is_dir():
        raise UserError(f"{what} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UserError(f"{what} {path}: cannot write in {parent} (permission denied)")
    return path
