"""The limits every record must respect before it becomes an ``Event``.

The engine sums amounts in integer micro-units, compares property values with ``where``
filters and adds ``offset_by`` values to timestamps. Rather than guard every one of those
places, a record is checked once, at the edge, and only values the engine can always
handle get in:

* numbers: every number in what the engine reads - ``properties``, ``traits`` and
  ``context.traits`` of a Data Pipelines record, ``data`` of a webhook - is finite and
  within ``±MAX_ABS_NUMBER`` (2^53 - 1, JavaScript's largest safe integer: the largest
  range in which a double still holds every integer exactly, and what Customer.io's
  JavaScript producers can send). Anything else is ``out_of_range``. (JSON numbers too
  large for a double are ``out_of_range`` when parsed.)
* depth: those objects nest at most ``MAX_DEPTH`` levels, and a whole record at most
  1024 (the JSON parser's limit) - and, when it has no id to keep, at most 254, the
  limit of the serializer that derives one. Deeper is ``too_deep``;
* event time: at most ``max_clock_skew`` ahead of the reference clock (the wall clock
  live; the clock at the start of a replay), else ``bad_timestamp``. A record stamped
  in the year 9999 therefore never moves the engine's clock.

The walk is one pass, its recursion bounded by ``MAX_DEPTH``, over only what the engine
reads: a record's context is typically the largest part
of it and is never evaluated. The path of an offending value is worked out only when
there is one, and names keys and positions, never values.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from streamsync.ingest.errors import DecodeError, DecodeReason

#: Largest magnitude of a number in a record: 2^53 - 1.
MAX_ABS_NUMBER = 9_007_199_254_740_991
#: Deepest nesting of objects and arrays in a record (the record itself is level 1).
MAX_DEPTH = 64
#: Deepest nesting the JSON parser (orjson) accepts.
PARSER_MAX_DEPTH = 1024
#: Default for how far ahead of the reference clock an event time may be: a day.
DEFAULT_MAX_CLOCK_SKEW_S = 24 * 60 * 60

_LOW = -MAX_ABS_NUMBER
_HIGH = MAX_ABS_NUMBER


def check_values(values: dict[str, Any], label: str) -> None:
    """Raise ``OUT_OF_RANGE`` or ``TOO_DEEP`` unless every number in ``values`` (the
    record's ``label`` object: properties, traits, webhook data) is finite and within
    range and nothing in it nests deeper than :data:`MAX_DEPTH`.

    ``not low <= v <= high`` is also true for NaN, so one comparison covers NaN, the
    infinities and huge values (floats and integers alike; ``bool`` is left alone).
    """
    try:
        _walk(values, 1)
    except _OutOfRange:
        raise _out_of_range(values, label) from None
    except _TooDeep:
        raise too_deep(label) from None


class _OutOfRange(Exception):
    pass


class _TooDeep(Exception):
    pass


def _walk(node: Any, depth: int) -> None:
    # Recursive, which is the fastest walk in CPython for the small objects records
    # hold; the depth is checked before each call, so recursion stays under MAX_DEPTH.
    for value in node.values() if type(node) is dict else node:
        kind = type(value)
        if kind is str:
            continue
        if kind is dict or kind is list:
            if value:
                if depth >= MAX_DEPTH:
                    raise _TooDeep
                _walk(value, depth + 1)
        elif (kind is float or kind is int) and not _LOW <= value <= _HIGH:
            raise _OutOfRange


def too_deep(label: str = "the record") -> DecodeError:
    return DecodeError(
        DecodeReason.TOO_DEEP, f"{label} nests objects and arrays deeper than {MAX_DEPTH} levels"
    )


def _out_of_range(values: dict[str, Any], label: str) -> DecodeError:
    path = _first_bad_path(values, label) or label
    return DecodeError(
        DecodeReason.OUT_OF_RANGE,
        f"{path} is not a finite number within ±{MAX_ABS_NUMBER} (2^53 - 1)",
    )


def _first_bad_path(values: dict[str, Any], label: str) -> str | None:
    """The path (``properties.products[2].price``) of the first offending number."""
    stack: list[tuple[Any, str]] = [(values, label)]
    while stack:
        node, prefix = stack.pop()
        items = (
            ((f"{prefix}.{k}", v) for k, v in node.items())
            if type(node) is dict
            else ((f"{prefix}[{i}]", v) for i, v in enumerate(node))
        )
        for path, value in items:
            kind = type(value)
            if (kind is float or kind is int) and not _LOW <= value <= _HIGH:
                return path
            if kind is dict or kind is list:
                stack.append((value, path))
    return None


def check_skew(timestamp_ms: int, latest_ms: int | None, field: str = "timestamp") -> None:
    """Raise ``bad_timestamp`` when ``timestamp_ms`` is after ``latest_ms`` (the reference
    clock plus ``max_clock_skew_s``; ``None``: no bound). The detail states the bound."""
    if latest_ms is not None and timestamp_ms > latest_ms:
        latest = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=latest_ms)
        raise DecodeError(
            DecodeReason.BAD_TIMESTAMP,
            f"{field} is after {latest.strftime('%Y-%m-%dT%H:%M:%S')}Z, the latest allowed "
            "(the reference clock plus max_clock_skew_s)",
        )


def json_error(exc: orjson.JSONDecodeError, what: str) -> DecodeError:
    """The reason for JSON that does not parse: too deep and too-large numbers are named
    as such (they are valid JSON syntax), anything else is ``malformed_json``."""
    if "depth" in exc.msg or "recursion" in exc.msg:
        return DecodeError(
            DecodeReason.TOO_DEEP,
            f"{what} nests objects and arrays deeper than {PARSER_MAX_DEPTH} levels "
            f"(at byte {exc.pos})",
        )
    if "infinity" in exc.msg:
        return DecodeError(
            DecodeReason.OUT_OF_RANGE,
            f"{what} holds a number too large for a double (at byte {exc.pos})",
        )
    return DecodeError(DecodeReason.MALFORMED_JSON, f"{what} is not valid JSON (at byte {exc.pos})")
