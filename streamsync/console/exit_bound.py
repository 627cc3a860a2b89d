"""An audience's maximum time to exit, and the stuck members it finds.

A member whose enter is older than the longest a membership of its audience can last
should have had an exit delta: it is *stuck* (a deadline did not fire, a partition's
clock is not moving). The bound is derived from the definition alone, so the console can
list stuck members from the membership table without evaluate's state:

* ``since_last`` with ``at_least`` > 0 and a ``less_than`` (no ``offset_by``): a new
  matching record makes the entry false for ``at_least``, so one membership lasts at
  most ``less_than - at_least`` (``ACT__CartAbandon__90m``: 7d - 90m);
* ``happened`` holds at an instant only;
* ``all`` lasts no longer than its shortest bounded part, ``any`` only when every part
  is instantaneous; ``in_audience`` is the referenced audience's bound;
* ``sticky_for: P`` with an instantaneous entry lasts ``P`` (a period is renewed only by
  a trigger at exactly its end);
* everything else - windows that new records keep filling (``count``, ``sum``,
  ``since_last`` without ``at_least``), traits, open items, ``not`` - has no bounded
  exit, and such an audience has no stuck rule.

An exit condition only shortens a membership, so it never changes the bound. Time is
event time, as everywhere in the console: "now" is the newest delta's time, and a member
is stuck only once its bound is passed by more than evaluate's allowed lateness and idle
grace (and a minute of margin, as evaluate's own stuck count), since deadlines fire when
the watermark - not the newest record - passes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from streamsync.audiences.definition import Audience, Condition
from streamsync.deltas.membership import Member

#: Slack past lateness and idle grace before an overdue exit counts as stuck.
STUCK_MARGIN_MS = 60_000


@dataclass(frozen=True, slots=True)
class ExitBound:
    """The longest one membership of an audience lasts, or why it has no bound."""

    #: milliseconds; ``None``: no bounded exit (no stuck rule)
    ms: int | None
    #: one line saying where the bound comes from (or why there is none)
    why: str


def exit_bound(audience: Audience, audiences: Mapping[str, Audience]) -> ExitBound:
    """``audience``'s maximum time to exit (``audiences``: by name, for ``in_audience``)."""
    entry = _bound(audience.entry, audiences, frozenset({audience.name}))
    if audience.sticky_for is not None:
        if entry == 0:
            return ExitBound(audience.sticky_for, "sticky_for with an instantaneous entry")
        return ExitBound(None, "sticky_for renews the period while the entry holds at its end")
    if entry is None:
        return ExitBound(
            None, "the entry can hold indefinitely (new records keep it true, or no window)"
        )
    return ExitBound(entry, "the entry's windows (since_last less_than minus at_least)")


def _bound(cond: Condition, audiences: Mapping[str, Audience], seen: frozenset[str]) -> int | None:
    """The longest ``cond`` holds without a break, under any input; ``None``: unbounded."""
    kind = cond.kind
    if kind == "happened":
        return 0
    if kind == "since_last":
        spec = cond.since_last
        assert spec is not None
        if spec.offset_by is not None or spec.less_than is None or spec.at_least <= 0:
            return None
        return spec.less_than - spec.at_least
    if kind == "all":
        spans = [_bound(child, audiences, seen) for child in cond.children()]
        bounded = [s for s in spans if s is not None]
        return min(bounded) if bounded else None
    if kind == "any":
        spans = [_bound(child, audiences, seen) for child in cond.children()]
        return 0 if all(s == 0 for s in spans) else None
    if kind == "in_audience":
        name = cond.in_audience
        referenced = audiences.get(name or "")
        if referenced is None or referenced.name in seen:
            return None
        inner = _bound(referenced.entry, audiences, seen | {referenced.name})
        if referenced.sticky_for is not None:
            return referenced.sticky_for if inner == 0 else None
        return inner
    return None


def stuck_members(
    members: Iterable[Member], bound: ExitBound, now_ms: int | None, slack_ms: int
) -> list[Member]:
    """The members whose enter is older than ``bound`` (plus ``slack_ms``) at ``now_ms``,
    oldest first; none when the audience has no bound or there is no clock yet."""
    if bound.ms is None or now_ms is None:
        return []
    before = now_ms - bound.ms - slack_ms
    return sorted((m for m in members if m.since_ms < before), key=lambda m: m.since_ms)
