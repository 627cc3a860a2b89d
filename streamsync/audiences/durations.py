"""Durations as audience authors write them: ``90m``, ``7d``, ``-7d``, ``1ms``.

Everything inside the engine is integer milliseconds of event time.
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

_DURATION = re.compile(r"^\s*(-?)\s*(\d+)\s*(ms|s|m|h|d|w)\s*$")


def parse_duration(text: str | int) -> int:
    """Parse ``"90m"`` into milliseconds. A bare integer is milliseconds; ``0`` is allowed."""
    if isinstance(text, bool):
        raise ValueError("a duration is a number with a unit, such as 90m or 7d")
    if isinstance(text, int):
        return text
    match = _DURATION.match(text)
    if match is None:
        if text.strip() in {"0", "-0"}:
            return 0
        raise ValueError(
            f"{text!r} is not a duration: write a whole number and a unit "
            "(ms, s, m, h, d, w), such as 90m or 7d"
        )
    sign, amount, unit = match.groups()
    value = int(amount) * UNITS[unit]
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
