"""Why a membership change happened at an instant no record has: the deadline behind it.

A delta caused by a deadline (a window passing, "no order for 90 minutes", the end of a
sticky period) cites the records its deadline was computed from, but not which rule of
the definition made that instant a deadline. ``explain`` derives it here, from the
definition and those records, rather than having the engine carry a reason on every
delta: the deltas stay small on the hot path, and the definition the change was made
under (the delta's ``version``) says everything a reason would.

A reason is found by recomputing, for every timed condition of the audience (and of the
audiences it references), the deadlines the cited records give, and keeping those that
are the delta's instant. The words follow the definition, not the engine's state.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from streamsync.audiences.definition import (
    Audience,
    Capture,
    Condition,
    EventMatch,
    OccurredSinceLast,
    SinceLast,
)
from streamsync.audiences.durations import UNITS, format_duration
from streamsync.audiences.matching import path_reader, predicate
from streamsync.deltas.record import format_rfc3339_ms
from streamsync.ingest.bounds import MAX_ABS_NUMBER
from streamsync.ingest.event import Event

_DAY = UNITS["d"]


def _span(ms: int) -> str:
    """A duration as a definition spells it: days rather than weeks (``7d``)."""
    if ms and ms % _DAY == 0:
        return f"{ms // _DAY}d"
    return format_duration(ms)


def _matches(match: EventMatch, event: Event) -> bool:
    if event.name != match.event or event.kind != match.kind:
        return False
    test = predicate(match)
    return test is None or test(event)


def _captured(capture: Capture, event: Event) -> int | None:
    """The offset a ``since_last`` reads from its record, as the engine computes it."""
    values = [
        v
        for v in path_reader(capture.path)(event.properties)
        if isinstance(v, int | float)
        and not isinstance(v, bool)
        and -MAX_ABS_NUMBER <= v <= MAX_ABS_NUMBER
    ]
    if not values:
        return None
    pick = max if capture.max_of is not None else min
    return round(pick(values) * UNITS[capture.unit])


def _record(event: Event) -> str:
    return f"{event.name!r} at {format_rfc3339_ms(event.timestamp_ms)}"


def _leaves(cond: Condition) -> Iterator[Condition]:
    yield cond
    for child in cond.children():
        yield from _leaves(child)


def _conditions(audience: Audience) -> list[Condition]:
    conds = list(_leaves(audience.entry))
    if audience.exit is not None:
        conds.extend(_leaves(audience.exit))
    return conds


def _since_last(
    spec: SinceLast, at_ms: int, records: Sequence[Event], exits: Sequence[OccurredSinceLast]
) -> Iterator[str]:
    for event in records:
        if not _matches(spec, event):
            continue
        base = event.timestamp_ms
        plus = ""
        if spec.offset_by is not None:
            offset = _captured(spec.offset_by, event)
            if offset is None:
                continue
            base += offset
            plus = f" plus its {spec.offset_by.path} ({_span(offset)})"
        if spec.less_than is not None and base + spec.less_than == at_ms:
            yield f"window of {_span(spec.less_than)} passed since {_record(event)}{plus}"
        if base + spec.at_least == at_ms:
            # "since the cart, no order": the exit that the wait is for, when there is one.
            after = [e.event for e in exits if _matches(e.since, event)]
            if after and not plus:
                nothing = " or ".join(repr(name) for name in dict.fromkeys(after))
                yield f"no {nothing} within {_span(spec.at_least)} of {_record(event)}"
            else:
                yield f"{_span(spec.at_least)} passed since {_record(event)}{plus}"


def _reasons(
    audience: Audience,
    by_name: Mapping[str, Audience],
    at_ms: int,
    records: Sequence[Event],
    seen: set[str],
) -> Iterator[str]:
    seen.add(audience.name)
    conds = _conditions(audience)
    exits = [c.occurred_since_last for c in conds if c.occurred_since_last is not None]
    for cond in conds:
        if cond.since_last is not None:
            yield from _since_last(cond.since_last, at_ms, records, exits)
        elif cond.count is not None and cond.count.within is not None:
            count = cond.count
            within = count.within
            assert within is not None
            for event in records:
                if _matches(count, event) and event.timestamp_ms + within == at_ms:
                    yield (
                        f"window of {_span(within)} passed since {_record(event)} "
                        f"(fewer than {count.at_least} left in it)"
                    )
        elif cond.happened is not None and audience.sticky_for is None:
            for event in records:
                if _matches(cond.happened, event) and event.timestamp_ms + 1 == at_ms:
                    yield f"the instant of {_record(event)} passed"
        elif cond.in_audience is not None and cond.in_audience not in seen:
            ref = by_name.get(cond.in_audience)
            if ref is not None:
                for reason in _reasons(ref, by_name, at_ms, records, seen):
                    yield f"{reason} (in {ref.name})"


def deadline_reasons(
    audience: Audience,
    by_name: Mapping[str, Audience],
    at_ms: int,
    records: Sequence[Event],
    *,
    entered_at: int | None = None,
) -> list[str]:
    """Why ``audience`` changed at ``at_ms`` when no cited record is at that instant:
    each deadline that ``records`` (the change's cited records) give under the
    definition and that falls at ``at_ms``, once. ``by_name`` resolves references;
    ``entered_at`` is the instant of the membership's enter, which a sticky period
    counts from. Empty when nothing explains the instant."""
    reasons: list[str] = []
    sticky = audience.sticky_for
    if sticky is not None and entered_at is not None and entered_at + sticky == at_ms:
        when = format_rfc3339_ms(entered_at)
        reasons.append(f"sticky period of {_span(sticky)} since the enter at {when} ended")
    reasons.extend(_reasons(audience, by_name, at_ms, records, set()))
    return list(dict.fromkeys(reasons))
