"""Durations as audience authors write them: ``90m``, ``7d``, ``-7d``, ``1ms``.

Everything inside the engine is integer milliseconds of event time. A duration always
carries its unit: a bare ``90`` could mean 90 ms, seconds or minutes, so only ``0`` may be
written without one. Every duration lies within :data:`MAX_DURATION` (3650 days, about ten
years) either side of zero; longer is a typo, and the bound keeps every deadline the
engine computes well inside the range of timestamps.
"""

from __future__ import annotations

import re

MS = 1
SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
WEEK = 7 * DAY

UNITS: dict[str, int] = {"ms": MS, "s": SECOND, "m": MINUTE, "h": HOUR, "d": DAY, "w": WEEK}

#: The longest duration accepted, either sign: 3650 days.
MAX_DURATION = 3650 * DAY

# ASCII digits only (``\d`` would take other scripts' digits), and few enough of them that
# the range check below sees an ordinary int.
_DURATION = re.compile(r"\s*(-?)\s*([0-9]{1,20})\s*(ms|s|m|h|d|w)\s*", re.ASCII)
_ZERO = re.compile(r"\s*-?0+\s*", re.ASCII)
_SHAPE = "write a whole number and a unit (ms, s, m, h, d, w), such as 90m or 7d"


def parse_duration(text: str | int) -> int:
    """Parse ``"90m"`` into milliseconds; ``ValueError`` says what is wrong.

    A bare integer is accepted only when it is ``0`` (the one unambiguous number).
    """
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise ValueError("a duration is a number with a unit, such as 90m or 7d")
    if isinstance(text, int):
        if text == 0:
            return 0
        raise ValueError(
            f"{text} has no unit: write {text}ms, {text}s or {text}m (a bare number is ambiguous)"
        )
    match = _DURATION.fullmatch(text)
    if match is None:
        if _ZERO.fullmatch(text):
            return 0
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise ValueError(f"{shown!r} is not a duration: {_SHAPE}")
    sign, amount, unit = match.groups()
    value = int(amount) * UNITS[unit]
    if value > MAX_DURATION:
        raise ValueError(
            f"{sign}{amount}{unit} is out of range: a duration is at most "
            f"{format_duration(MAX_DURATION)} either way"
        )
    return -value if sign else value


def format_duration(ms: int) -> str:
    """The shortest exact spelling of ``ms`` (for messages)."""
    if ms == 0:
        return "0"
    sign = "-" if ms < 0 else ""
    ms = abs(ms)
    for unit in ("w", "d", "h", "m", "s"):
        if ms % UNITS[unit] == 0:
            return f"{sign}{ms // UNITS[unit]}{unit}"
    return f"{sign}{ms}ms"
