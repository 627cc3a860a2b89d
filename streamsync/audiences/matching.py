"""Which records a condition looks at: event name, kind, and ``where`` property filters.

Compiled once per definition into plain functions, because they run for every record
whose name matches. A path step ``name[]`` fans out over a list (``products[].sku``), and
a filter holds when *any* value the path reaches satisfies it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from streamsync.audiences.definition import Comparison, EventMatch, Scalar
from streamsync.ingest.event import IDENTIFY, Event

Predicate = Callable[[Event], bool]
PathReader = Callable[[dict[str, Any]], list[Any]]


def path_reader(path: str) -> PathReader:
    """A function returning every value ``path`` reaches in a property dict.

    Missing keys, nulls and wrong shapes reach nothing rather than raising: a record
    without ``days_supply`` simply has no value for it.
    """
    steps = [
        (part[:-2], True) if part.endswith("[]") else (part, False) for part in path.split(".")
    ]
    if len(steps) == 1 and not steps[0][1]:
        key = steps[0][0]

        def read_one(props: dict[str, Any]) -> list[Any]:
            value = props.get(key)
            return [] if value is None else [value]

        return read_one

    def read(props: dict[str, Any]) -> list[Any]:
        current: list[Any] = [props]
        for key, fan_out in steps:
            following: list[Any] = []
            for item in current:
                if not isinstance(item, dict):
                    continue
                value = item.get(key)
                if value is None:
                    continue
                if fan_out:
                    if isinstance(value, list):
                        following.extend(v for v in value if v is not None)
                else:
                    following.append(value)
            current = following
        return current

    return read


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def same_value(value: Any, expected: Scalar) -> bool:
    """Equality that keeps ``true`` and ``1`` apart, as YAML authors mean them."""
    return bool(value == expected) and isinstance(value, bool) == isinstance(expected, bool)


def _compare(op: Callable[[Any, float], bool], bound: float) -> Callable[[Any], bool]:
    # No float(v): Python compares an int with a float exactly, and float() of a huge
    # int would raise.
    return lambda v: _is_number(v) and op(v, bound)


def _test(expected: Scalar | Comparison) -> Callable[[list[Any]], bool]:
    if not isinstance(expected, Comparison):
        return lambda values: any(same_value(v, expected) for v in values)
    checks: list[Callable[[Any], bool]] = []
    fields = expected.model_fields_set
    if "eq" in fields:
        checks.append(lambda v: same_value(v, expected.eq))
    if "ne" in fields:
        checks.append(lambda v: not same_value(v, expected.ne))
    for name, op in (
        ("gt", operator.gt),
        ("gte", operator.ge),
        ("lt", operator.lt),
        ("lte", operator.le),
    ):
        if name in fields:
            bound = float(getattr(expected, name))
            checks.append(_compare(op, bound))
    if "one_of" in fields:
        allowed = list(expected.one_of or [])
        checks.append(lambda v: any(same_value(v, a) for a in allowed))
    exists = expected.exists
    if exists is not None and fields == {"exists"}:
        return lambda values: bool(values) is exists
    return lambda values: any(all(check(v) for check in checks) for v in values)


def predicate(match: EventMatch) -> Predicate | None:
    """The ``where`` filter of ``match`` as one function, or ``None`` when it has none.

    Identify records are filtered on their traits, everything else on its properties.
    """
    if not match.where:
        return None
    on_traits = match.kind == IDENTIFY
    tests = [(path_reader(path), _test(expected)) for path, expected in match.where.items()]

    def check(event: Event) -> bool:
        props = event.traits if on_traits else event.properties
        return all(test(read(props)) for read, test in tests)

    return check
