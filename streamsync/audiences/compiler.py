"""Audience definitions compiled into compact per-customer state and plain evaluators.

A customer is one Python list (see the ``layout`` constants): a bitmask of current
memberships, the earliest time anything may change, one "next change" time and one
sequence number per audience, and then one slot per *fact*. A fact is the smallest
summary of the customer's history a condition needs: the latest matching record, the
last ``n`` timestamps per key, a capped counter, a net sum in micro-units, a set of open
keys, a trait value. Facts are shared between audiences that read the same thing, and
none of them grows with the length of the history, so per-event cost stays flat.

Facts do not assume records arrive in time order: a late record (see
:mod:`streamsync.audiences.engine`) updates them with its own event time, so "the latest
cart" stays the latest by event time, a window keeps its newest timestamps, a trait keeps
the value of its newest identify and an item closed after a late open stays closed (a
close is remembered for the allowed lateness for that).

Each condition compiles to ``evaluate(customer, t) -> (value, next_change)``: its value
at event time ``t`` and the earliest later instant at which it could change without a
new record arriving (``NEVER`` if only a record can change it). That second number is
what turns "no order within 90 minutes" into a timer instead of a poll.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from sys import intern
from typing import Any

from streamsync.audiences.definition import (
    Audience,
    Capture,
    Condition,
    Count,
    EventMatch,
    OpenItems,
    SinceLast,
    Sum,
    Trait,
)
from streamsync.audiences.durations import UNITS
from streamsync.audiences.matching import Predicate, path_reader, predicate, same_value
from streamsync.ingest.bounds import MAX_ABS_NUMBER
from streamsync.ingest.event import IDENTIFY, Event

#: An instant later than any event time: "no change without a new record".
NEVER = 1 << 62

# Customer layout: fixed header, then per-audience "next change" and "seq", then facts.
MEMBERS = 0  #: bitmask, bit i = member of audience i
DUE = 1  #: min of the per-audience next changes (the customer's timer)
PENDING = 2  #: audiences touched by records at the open instant (0 = not dirty)
IDS = 3  #: identifiers (email, phone, cio_id) or None
RIDS = 4  #: record ids applied at the open instant, or None
CUSTOMER_ID = 5
ID_KIND = 6  #: what CUSTOMER_ID is (``Event.id_kind`` of the customer's latest record)
HEADER = 7

Customer = list[Any]
#: What a fact is: ``(kind, record match, parameters...)``, see ``_Builder``.
FactKey = tuple[Any, ...]
#: A "latest record" fact a deadline is computed from: its first slot, the offsets from
#: the record's time (plus, when ``captured``, the offset read from it, slot + 2) at
#: which the condition reading it can change, and ``captured``.
Anchor = tuple[int, tuple[int, ...], bool]
Evaluator = Callable[[Customer, int], tuple[bool, int]]
Updater = Callable[[Customer, Event], None]

_FALSE_NEVER = (False, NEVER)
_TRUE_NEVER = (True, NEVER)
_MICRO = 1_000_000
#: Numbers the engine converts (amounts to micro-units, offsets to milliseconds). The
#: decoders dead-letter anything else (``out_of_range``); the conversions skip it too,
#: so an ``Event`` built by hand cannot make them raise either (NaN fails both bounds).
_LOW, _HIGH = -MAX_ABS_NUMBER, MAX_ABS_NUMBER


def micro_limit(threshold: float) -> int | float:
    """A sum threshold in micro-units, exactly (``Fraction``: no float overflow for any
    finite threshold); an infinite one stays infinite, which compares correctly with
    any integer sum."""
    if math.isfinite(threshold):
        return round(Fraction(threshold) * _MICRO)
    return threshold


def compact_id(record_id: str | None) -> bytes | str | None:
    """A record id as stored in state: canonical lowercase UUIDs (what Customer.io and
    Segment libraries send) become their 16 bytes, 49 bytes of memory instead of 85;
    anything else is kept as is. :func:`expand_id` restores the exact original."""
    if (
        record_id is not None
        and len(record_id) == 36
        and record_id[8] == record_id[13] == record_id[18] == record_id[23] == "-"
        and record_id == record_id.lower()
    ):
        try:
            raw = bytes.fromhex(record_id.replace("-", ""))
        except ValueError:
            return record_id
        if len(raw) == 16:
            return raw
    return record_id


def expand_id(stored: bytes | str) -> str:
    if isinstance(stored, str):
        return stored
    h = stored.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class _Null:
    """Stands for a trait explicitly set to null (distinct from "never set")."""

    __slots__ = ()


NULL = _Null()


@dataclass
class EvalContext:
    """What the engine tells the evaluators about the instant it evaluates, beyond the
    customer: shared by one program's evaluators, set and reset by the engine around each
    customer's evaluation."""

    #: ``(own time, stored record id)`` of the customer's records applied late at this
    #: instant (behind the clock): a ``happened`` of one of them holds now
    late: set[tuple[int, Any]] = field(default_factory=set)
    #: the earliest own time of such a record a ``happened`` held for (a sticky
    #: period starts there), or ``None``
    started: int | None = None
    #: customers whose per-key facts hit the cap since the engine last took them:
    #: customer id -> (entries dropped, the record that made it drop them)
    capped: dict[str, tuple[int, Event]] = field(default_factory=dict)

    def drop(self, c: Customer, e: Event, dropped: int) -> None:
        """``dropped`` entries of one of ``c``'s facts were forgotten at ``e`` (the cap)."""
        cid: str = c[CUSTOMER_ID]
        before = self.capped.get(cid)
        self.capped[cid] = ((before[0] if before else 0) + dropped, e)


@dataclass
class Program:
    """Everything the engine runs: evaluators in dependency order and fact updaters.

    ``audiences[i]`` has bit ``1 << i``; every audience comes after the audiences it
    references, so evaluating in ascending bit order sees references already updated.
    """

    audiences: list[Audience]
    evaluators: list[Evaluator]
    #: record name -> fact updates for it, each with the audiences that read the fact
    dispatch: dict[str, list[tuple[str, Predicate | None, Updater, int]]]
    #: audience i -> bitmask of i and every audience that depends on it, transitively
    dependents: list[int]
    #: audience i -> ``(slot, offsets, captured)`` of its "latest record" facts (and its
    #: references'): a deadline delta at ``t`` cites the record of a slot whose time
    #: (plus its captured offset) is ``t`` minus one of ``offsets`` (see :data:`Anchor`)
    anchors: list[list[Anchor]]
    #: audience i -> ``(slot, n, within)`` of its window counts (and its references'),
    #: whose qualifying records its deltas cite (:func:`window_records`)
    windows: list[list[tuple[int, int, int]]]
    #: audience i -> its "next change" slot, or 0 if only records can change it (no
    #: window, deadline or sticky period): such audiences need no slot or timer
    next_slots: list[int]
    fact_slots: int
    #: the fact catalogue: what a fact is (its key: kind, the records it reads and its
    #: parameters, never an audience's name or position) -> ``(first slot, width)``.
    #: Shared by every audience reading the same thing; what a changed definition can
    #: take over from stored state (:mod:`streamsync.audiences.migration`).
    facts: dict[FactKey, tuple[int, int]]
    #: fact updates as ``(record name, kind, where-filter, updater, fact slot)``
    updates: list[tuple[str, str, Predicate | None, Updater, int]]
    #: fact slot -> the audiences reading it (bitmask)
    fact_readers: dict[int, int]
    #: shared with the evaluators: set by the engine around a late customer's evaluation
    context: EvalContext

    @property
    def next0(self) -> int:
        return HEADER

    @functools.cached_property
    def timed(self) -> int:
        """How many audiences have a next-change slot."""
        return sum(1 for slot in self.next_slots if slot)

    @property
    def seq0(self) -> int:
        return HEADER + self.timed

    @property
    def fact0(self) -> int:
        return self.seq0 + len(self.audiences)

    @property
    def width(self) -> int:
        return self.fact0 + self.fact_slots

    @functools.cached_property
    def _blank(self) -> Customer:
        return (
            [0, NEVER, 0, None, None, None, "id"]
            + [NEVER] * self.timed
            + [0] * len(self.audiences)
            + [None] * self.fact_slots
        )

    def new_customer(self, customer_id: str) -> Customer:
        customer = self._blank.copy()
        customer[CUSTOMER_ID] = customer_id
        return customer


def dependency_order(audiences: Sequence[Audience]) -> list[Audience]:
    """Audiences sorted so references come first (stable otherwise).

    Callers validate references and cycles first (``loader``); this raises on either.
    """
    by_name = {a.name: a for a in audiences}
    ordered: list[Audience] = []
    state: dict[str, int] = {}

    def visit(audience: Audience, trail: tuple[str, ...]) -> None:
        mark = state.get(audience.name)
        if mark == 2:
            return
        if mark == 1:
            raise ValueError("reference cycle: " + " -> ".join((*trail, audience.name)))
        state[audience.name] = 1
        for ref in sorted(audience.references()):
            if ref not in by_name:
                raise ValueError(f"{audience.name} references unknown audience {ref!r}")
            visit(by_name[ref], (*trail, audience.name))
        state[audience.name] = 2
        ordered.append(audience)

    for audience in audiences:
        visit(audience, ())
    return ordered


def is_timed(cond: Condition) -> bool:
    """Whether ``cond`` can change with time alone (a window, band or deadline)."""
    if cond.since_last is not None or cond.happened is not None:
        return True
    if cond.count is not None:
        return cond.count.within is not None
    if cond.sum is not None:
        return cond.sum.within is not None
    return any(is_timed(child) for child in cond.children())


def _audience_timed(audience: Audience) -> bool:
    return (
        audience.sticky_for is not None
        or is_timed(audience.entry)
        or (audience.exit is not None and is_timed(audience.exit))
    )


#: Keys (or entries, for a windowed sum) one per-key fact keeps per customer by default:
#: far above any real shopper's, low enough that a scraper's ever-new product ids cost a
#: bounded amount per record instead of growing with its history.
DEFAULT_MAX_KEYS = 1_000


class _Builder:
    def __init__(self, audiences: list[Audience], lateness_ms: int, max_keys: int) -> None:
        self.audiences = audiences
        self.lateness = lateness_ms
        self.max_keys = max_keys
        self.index = {a.name: i for i, a in enumerate(audiences)}
        timed = sum(1 for a in audiences if _audience_timed(a))
        self.base = HEADER + timed + len(audiences)
        self.slots: dict[FactKey, tuple[int, int]] = {}
        #: (record name, kind, where-filter, updater, fact slot), one per fact input
        self.updates: list[tuple[str, str, Predicate | None, Updater, int]] = []
        self.readers: dict[int, int] = {}  # slot -> audience mask reading it
        self.anchors: list[list[Anchor]] = [[] for _ in audiences]
        self.windows: list[list[tuple[int, int, int]]] = [[] for _ in audiences]
        self.current = 0
        self.width = 0  # fact slots allocated so far
        self.context = EvalContext()

    # -- facts -----------------------------------------------------------------------

    def _slot(self, key: tuple[Any, ...], width: int = 1) -> tuple[int, bool]:
        """The first of ``width`` adjacent slots holding the fact ``key``; ``fresh`` when
        this call allocated them (the caller then registers the updater)."""
        known = self.slots.get(key)
        fresh = known is None
        if known is None:
            slot = self.base + self.width
            self.slots[key] = (slot, width)
            self.width += width
        else:
            slot = known[0]
        self.readers[slot] = self.readers.get(slot, 0) | (1 << self.current)
        return slot, fresh

    def _on(self, match: EventMatch, slot: int, update: Updater) -> None:
        """Run ``update`` on the fact at ``slot`` for every record ``match`` selects."""
        self.updates.append((match.event, match.kind, predicate(match), update, slot))

    @staticmethod
    def _match_key(match: EventMatch) -> str:
        return match.model_dump_json(include={"event", "kind", "where"})

    def latest(self, match: EventMatch, capture: Capture | None = None) -> int:
        """Slots ``[ts, record_id]`` (plus ``offset`` with a capture) of the latest match.

        Adjacent slots rather than a tuple: a tuple would cost 56 bytes per fact per
        customer, and state size is what bounds customers per instance.
        """
        cap_key = None if capture is None else capture.model_dump_json()
        key = ("latest", self._match_key(match), cap_key)
        slot, fresh = self._slot(key, 2 if capture is None else 3)
        if not fresh:
            return slot
        rid_slot = slot + 1
        if capture is None:

            def update(c: Customer, e: Event) -> None:
                ts = e.timestamp_ms
                last = c[slot]
                if last is None or ts >= last:  # equal: the later in the log wins
                    c[slot] = ts
                    c[rid_slot] = compact_id(e.record_id)

        else:
            read = path_reader(capture.path)
            pick = max if capture.max_of is not None else min
            unit = UNITS[capture.unit]
            offset_slot = slot + 2

            def update(c: Customer, e: Event) -> None:
                last = c[slot]
                if last is not None and e.timestamp_ms < last:
                    return  # a late record older than the latest one
                values = [
                    v
                    for v in read(e.properties)
                    if isinstance(v, int | float) and not isinstance(v, bool) and _LOW <= v <= _HIGH
                ]
                c[slot] = e.timestamp_ms
                c[rid_slot] = compact_id(e.record_id)
                c[offset_slot] = round(pick(values) * unit) if values else None

        self._on(match, slot, update)
        return slot

    def window_count(self, spec: Count) -> int:
        """A flat list of fixed-stride blocks ``[key, t1, ..., tn, r1, ..., rn]``: the
        last ``n`` timestamps per key (``None`` until filled), oldest first, then the
        ids of those records (:func:`compact_id`) in the same order, so that a delta can
        cite every record the count stands on (see :func:`window_records`).

        A dict of lists would read more naturally but costs about twice the memory, and
        this is the largest fact a browsing customer has; the ids sit in the same list
        for the same reason.
        """
        assert spec.within is not None
        key = ("window_count", self._match_key(spec), spec.at_least, spec.within, spec.per)
        slot, fresh = self._slot(key)
        if not fresh:
            return slot
        n, within = spec.at_least, spec.within
        stride = 2 * n + 1
        cap_len = self.max_keys * stride
        context = self.context
        read_key = path_reader(spec.per) if spec.per is not None else None

        def update(c: Customer, e: Event) -> None:
            ts = e.timestamp_ms
            if read_key is None:
                keys: list[Any] = [None]
            else:
                keys = [k for k in read_key(e.properties) if isinstance(k, str | int | float)]
                if not keys:
                    return
                if len(keys) > 1:
                    keys = list(dict.fromkeys(keys))
            table: list[Any] | None = c[slot]
            if table is None:
                table = c[slot] = []
            rid = compact_id(e.record_id)
            grew = False
            for k in keys:
                for j in range(0, len(table), stride):
                    if table[j] == k:
                        newest = table[j + n]
                        if newest is None or ts >= newest:
                            at = j + n
                        else:  # a late record: keep the block's n newest, in order
                            oldest = table[j + 1]
                            if oldest is not None and ts < oldest:
                                break
                            at = j + 2  # after the unfilled (None) and older entries
                            while at <= j + n and (table[at] is None or table[at] <= ts):
                                at += 1
                            at -= 1
                        # Drop the oldest timestamp and its id, insert the new pair at
                        # ``at`` (the ids mirror the timestamps n slots on).
                        del table[j + 1]
                        table.insert(at, ts)
                        del table[j + n + 1]
                        table.insert(at + n, rid)
                        break
                else:
                    # Interned: the same product ids recur across customers, so each
                    # customer holds a reference instead of its own copy.
                    table.append(intern(k) if type(k) is str else k)
                    table.extend([None] * (n - 1))
                    table.append(ts)
                    table.extend([None] * (n - 1))
                    table.append(rid)
                    grew = True
            if grew:
                # Forget keys whose every timestamp has left the window: they can never
                # count again. Only when the table grows: stale blocks never change the
                # answer (a live block always has a later timestamp), only memory.
                # Blocks are deleted in place, last first, and only when there are
                # any: rebuilding the table element by element costs more than the
                # update itself.
                horizon = ts - within
                for j in range(len(table) - stride, -1, -stride):
                    if table[j + n] <= horizon:
                        del table[j : j + stride]
                if len(table) > cap_len:  # the cap: forget the least recent keys
                    dropped = 0
                    while len(table) > cap_len:
                        j = min(range(0, len(table), stride), key=lambda j: table[j + n])
                        del table[j : j + stride]
                        dropped += 1
                    context.drop(c, e, dropped)

        self._on(spec, slot, update)
        return slot

    def lifetime_count(self, spec: Count) -> int:
        key = ("count", self._match_key(spec), spec.at_least)
        slot, fresh = self._slot(key)
        if fresh:
            cap = spec.at_least

            def update(c: Customer, e: Event) -> None:
                count = c[slot] or 0
                if count < cap:
                    c[slot] = count + 1

            self._on(spec, slot, update)
        return slot

    def total(self, spec: Sum) -> int:
        """Slot holding the net sum in integer micro-units (exact for cents)."""
        # The threshold is the condition's, not the fact's: audiences summing the same
        # amounts over the same window share one running sum.
        key = ("sum", spec.model_dump_json(include={"add", "subtract", "within"}))
        slot, fresh = self._slot(key)
        if not fresh:
            return slot
        windowed = spec.within is not None
        max_keys = self.max_keys
        context = self.context
        for sign, amounts in ((1, spec.add), (-1, spec.subtract)):
            for amount in amounts:
                read = path_reader(amount.field)

                def update(
                    c: Customer, e: Event, read: Callable[..., list[Any]] = read, sign: int = sign
                ) -> None:
                    micro = 0
                    for v in read(e.properties):
                        if isinstance(v, int) and not isinstance(v, bool):
                            if _LOW <= v <= _HIGH:
                                micro += v * _MICRO
                        elif isinstance(v, float) and _LOW <= v <= _HIGH:
                            micro += round(v * _MICRO)
                    if windowed:
                        entries = c[slot]
                        if entries is None:
                            entries = c[slot] = []
                        entries.append((e.timestamp_ms, sign * micro))
                        if len(entries) > max_keys:  # the cap: forget the oldest entry
                            entries.remove(min(entries))
                            context.drop(c, e, 1)
                    else:
                        c[slot] = (c[slot] or 0) + sign * micro

                self._on(amount, slot, update)
        return slot

    def open_items(self, spec: OpenItems) -> int:
        """Slots ``[open, closed]``: the open keys with the time of their open, and the
        keys closed within the allowed lateness with the time of their close (so that a
        late open older than a close does not reopen the item; older closes are dropped
        by :meth:`open_now`, since a record that late is applied at the clock's instant,
        after them)."""
        key = ("open", spec.model_dump_json())
        slot, fresh = self._slot(key, 2)
        if not fresh:
            return slot
        read = path_reader(spec.key)
        closed_slot = slot + 1
        max_keys = self.max_keys
        context = self.context

        def opened(c: Customer, e: Event) -> None:
            ts = e.timestamp_ms
            closes: dict[Any, int] | None = c[closed_slot]
            for k in read(e.properties):
                if not isinstance(k, str | int | float):
                    continue
                if closes is not None and closes.get(k, ts) > ts:
                    continue  # a late open of an item closed after it
                items: dict[Any, int] | None = c[slot]
                if items is None:
                    items = c[slot] = {}
                if items.get(k, ts) <= ts:
                    items[intern(k) if type(k) is str else k] = ts
                    if len(items) > max_keys:  # the cap: forget the oldest open item
                        del items[min(items, key=items.__getitem__)]
                        context.drop(c, e, 1)

        def closed(c: Customer, e: Event) -> None:
            # Only keys an open can hold: a list or object under the key path is a
            # valid record that closes nothing (and is not hashable).
            ts = e.timestamp_ms
            items: dict[Any, int] | None = c[slot]
            for k in read(e.properties):
                if not isinstance(k, str | int | float):
                    continue
                opened_at = None if items is None else items.get(k)
                if opened_at is not None and opened_at <= ts:
                    del items[k]  # type: ignore[union-attr]
                closes: dict[Any, int] | None = c[closed_slot]
                if closes is None:
                    closes = c[closed_slot] = {}
                if closes.get(k, ts) <= ts:
                    closes[intern(k) if type(k) is str else k] = ts
            if not items:
                c[slot] = None

        self._on(spec.open, slot, opened)
        self._on(spec.close, slot, closed)
        return slot

    def trait(self, spec: Trait) -> int:
        """Slots ``[value, time]``: the value of the newest identify that set it."""
        key = ("trait", spec.name)
        slot, fresh = self._slot(key, 2)
        if fresh:
            name = spec.name
            ts_slot = slot + 1

            def update(c: Customer, e: Event) -> None:
                traits = e.traits
                if name in traits:
                    ts = e.timestamp_ms
                    last = c[ts_slot]
                    if last is None or ts >= last:  # equal: the later in the log wins
                        value = traits[name]
                        c[slot] = NULL if value is None else value
                        c[ts_slot] = ts

            match = EventMatch(event=IDENTIFY, kind="identify")
            self._on(match, slot, update)
        return slot

    def private_slot(self, label: str) -> int:
        slot, _ = self._slot(("private", label, self.audiences[self.current].name))
        return slot

    # -- conditions --------------------------------------------------------------------

    def condition(self, cond: Condition) -> Evaluator:
        kind = cond.kind
        if kind == "all":
            return _all([self.condition(c) for c in cond.all or []])
        if kind == "any":
            return _any([self.condition(c) for c in cond.any or []])
        if kind == "not_":
            assert cond.not_ is not None
            inner = self.condition(cond.not_)
            return lambda c, t: (not (r := inner(c, t))[0], r[1])
        if kind == "since_last":
            assert cond.since_last is not None
            return self._since_last(cond.since_last)
        if kind == "happened":
            assert cond.happened is not None
            slot = self.latest(cond.happened)
            self.anchors[self.current].append((slot, (1,), False))

            context = self.context
            rid_slot = slot + 1

            def happened(c: Customer, t: int) -> tuple[bool, int]:
                ts = c[slot]
                if ts == t:
                    return True, t + 1
                if context.late and (ts, c[rid_slot]) in context.late:
                    # Its record arrived late and is applied now: it happened at ``ts``,
                    # an instant already emitted (a sticky period starts there).
                    if context.started is None or ts < context.started:
                        context.started = ts
                    return True, t + 1
                return _FALSE_NEVER

            return happened
        if kind == "occurred_since_last":
            spec = cond.occurred_since_last
            assert spec is not None
            after, since = self.latest(spec), self.latest(spec.since)

            def occurred(c: Customer, t: int) -> tuple[bool, int]:
                a, s = c[after], c[since]
                return (a is not None and s is not None and a > s), NEVER

            return occurred
        if kind == "count":
            assert cond.count is not None
            return self._count(cond.count)
        if kind == "sum":
            assert cond.sum is not None
            return self._sum(cond.sum)
        if kind == "open_items":
            assert cond.open_items is not None
            slot = self.open_items(cond.open_items)
            closed_slot = slot + 1
            lateness = self.lateness

            def open_now(c: Customer, t: int) -> tuple[bool, int]:
                closes = c[closed_slot]
                if closes:
                    horizon = t - lateness
                    kept = {k: ts for k, ts in closes.items() if ts >= horizon}
                    c[closed_slot] = kept or None
                return bool(c[slot]), NEVER

            return open_now
        if kind == "trait":
            assert cond.trait is not None
            slot = self.trait(cond.trait)
            expected = cond.trait.equals

            def trait(c: Customer, t: int) -> tuple[bool, int]:
                value = c[slot]
                if value is None:
                    return _FALSE_NEVER
                if value is NULL:
                    return (expected is None), NEVER
                return same_value(value, expected), NEVER

            return trait
        if kind == "in_audience":
            ref = self.index[str(cond.in_audience)]
            self.anchors[self.current].extend(self.anchors[ref])
            self.windows[self.current].extend(self.windows[ref])
            bit = 1 << ref
            return lambda c, t: (bool(c[MEMBERS] & bit), NEVER)
        raise AssertionError(f"unhandled condition {kind}")

    def _since_last(self, spec: SinceLast) -> Evaluator:
        slot = self.latest(spec, spec.offset_by)
        at_least = spec.at_least
        less_than = spec.less_than
        captured = spec.offset_by is not None
        offsets = (at_least,) if less_than is None else (at_least, less_than)
        self.anchors[self.current].append((slot, offsets, captured))
        offset_slot = slot + 2

        def since_last(c: Customer, t: int) -> tuple[bool, int]:
            base = c[slot]
            if base is None:
                return _FALSE_NEVER
            if captured:
                offset = c[offset_slot]
                if offset is None:
                    return _FALSE_NEVER
                base += offset
            low = base + at_least
            if t < low:
                return False, low
            if less_than is None:
                return _TRUE_NEVER
            high = base + less_than
            return (True, high) if t < high else _FALSE_NEVER

        return since_last

    def _count(self, spec: Count) -> Evaluator:
        n = spec.at_least
        if spec.within is None:
            if spec.per is not None:
                raise ValueError("count with per needs a within window")
            slot = self.lifetime_count(spec)
            return lambda c, t: ((c[slot] or 0) >= n, NEVER)
        slot = self.window_count(spec)
        within, stride = spec.within, 2 * n + 1
        self.windows[self.current].append((slot, n, within))

        def count(c: Customer, t: int) -> tuple[bool, int]:
            table = c[slot]
            if not table:
                return _FALSE_NEVER
            # The n-th most recent timestamp of a full block is its first one.
            best = max(
                (table[j] for j in range(1, len(table), stride) if table[j] is not None),
                default=None,
            )
            if best is None:
                return _FALSE_NEVER
            until = best + within
            return (True, until) if t < until else _FALSE_NEVER

        return count

    def _sum(self, spec: Sum) -> Evaluator:
        slot = self.total(spec)
        strict = spec.greater_than is not None
        threshold = spec.greater_than if spec.greater_than is not None else spec.at_least
        limit = micro_limit(threshold or 0)
        within = spec.within

        def passes(value: int) -> bool:
            return value > limit if strict else value >= limit

        if within is None:
            return lambda c, t: (passes(c[slot] or 0), NEVER)

        def windowed(c: Customer, t: int) -> tuple[bool, int]:
            entries = c[slot]
            if not entries:
                return passes(0), NEVER
            horizon = t - within
            live = [(ts, amount) for ts, amount in entries if ts > horizon]
            c[slot] = live or None
            nxt = min((ts + within for ts, _ in live), default=NEVER)
            return passes(sum(amount for _, amount in live)), nxt

        return windowed

    def audience(self, i: int, audience: Audience) -> Evaluator:
        """Membership of audience ``i``: ``entry and not exit``, and with ``sticky_for`` a
        fixed period from each entry. Within the period an exit is ignored (``stay``)
        or ends it (``leave``); either way the period is forgotten once it is over, so
        the next entry starts a new one. Callers validate first (``loader``): sticky
        with an exit and no ``exit_during_sticky`` raises here rather than pick one."""
        self.current = i
        entry = self.condition(audience.entry)
        leave: Evaluator | None = None
        if audience.exit is not None:
            leave = self.condition(audience.exit)
            member = _all([entry, lambda c, t: (not (r := leave(c, t))[0], r[1])])
        else:
            member = entry
        if audience.sticky_for is None:
            return member
        if leave is not None and audience.exit_during_sticky is None:
            raise ValueError(
                f"{audience.name}: sticky_for with an exit needs exit_during_sticky: leave or stay"
            )
        period = audience.sticky_for
        end_slot = self.private_slot("sticky")
        context = self.context
        exit_ends = leave if audience.exit_during_sticky == "leave" else None

        def sticky(c: Customer, t: int) -> tuple[bool, int]:
            end = c[end_slot]
            if end is not None and t < end:
                if exit_ends is None:
                    return True, end
                gone, nxt = exit_ends(c, t)
                if not gone:
                    return True, min(end, nxt)
                # The exit ends the period; entering again needs entry without exit,
                # which cannot hold at this instant, so the code below says "not".
            context.started = None
            value, nxt = member(c, t)
            if value:
                # A period starts at the entry's instant: a late record's own time when
                # it is what entered (see ``happened``).
                start = t if context.started is None else context.started
                context.started = None
                end = start + period
                if end > t:
                    c[end_slot] = end
                    # Staying, only the period's end matters; leaving, so does the next
                    # instant the exit may start to hold (``nxt`` is at most that).
                    return True, end if exit_ends is None else min(end, nxt)
            c[end_slot] = None
            return False, nxt

        return sticky


def window_records(c: Customer, slot: int, n: int) -> tuple[int, list[bytes | str]] | None:
    """The block a window count stands on: the full block whose oldest timestamp is the
    newest (the one that holds the count longest, as the count's evaluator reads it),
    as ``(oldest timestamp, record ids oldest first)``; ``None`` without a full block.
    Ids of records that had none are left out."""
    table = c[slot]
    if not table:
        return None
    stride = 2 * n + 1
    best = -1
    for j in range(0, len(table), stride):
        first = table[j + 1]
        if first is not None and (best < 0 or first > table[best + 1]):
            best = j
    if best < 0:
        return None
    ids = [rid for rid in table[best + n + 1 : best + stride] if rid is not None]
    return table[best + 1], ids


def _all(parts: list[Evaluator]) -> Evaluator:
    if len(parts) == 1:
        return parts[0]

    def all_of(c: Customer, t: int) -> tuple[bool, int]:
        value, nxt = True, NEVER
        for part in parts:
            v, n = part(c, t)
            if not v:
                if n == NEVER:
                    return _FALSE_NEVER
                value = False
            if n < nxt:
                nxt = n
        return value, nxt

    return all_of


def _any(parts: list[Evaluator]) -> Evaluator:
    if len(parts) == 1:
        return parts[0]

    def any_of(c: Customer, t: int) -> tuple[bool, int]:
        value, nxt = False, NEVER
        for part in parts:
            v, n = part(c, t)
            if v:
                if n == NEVER:
                    return _TRUE_NEVER
                value = True
            if n < nxt:
                nxt = n
        return value, nxt

    return any_of


def compile_audiences(
    audiences: Sequence[Audience],
    *,
    lateness_ms: int = 5 * 60_000,
    max_keys: int = DEFAULT_MAX_KEYS,
) -> Program:
    """Compile validated audiences into a :class:`Program` (references must resolve).
    ``lateness_ms`` is the engine's allowed lateness: how long a close is remembered.
    ``max_keys`` caps the keys of each per-key fact of a customer (the oldest beyond it
    are dropped and reported through ``Program.context.capped``)."""
    ordered = dependency_order(audiences)
    builder = _Builder(ordered, lateness_ms, max_keys)
    evaluators = [builder.audience(i, a) for i, a in enumerate(ordered)]

    dispatch: dict[str, list[tuple[str, Predicate | None, Updater, int]]] = {}
    for name, kind, pred, update, slot in builder.updates:
        dispatch.setdefault(name, []).append((kind, pred, update, builder.readers[slot]))

    dependents = [1 << i for i in range(len(ordered))]
    # Reverse dependency order: a dependent's own closure is complete before it is read.
    for i in range(len(ordered) - 1, -1, -1):
        for j in range(i + 1, len(ordered)):
            if ordered[i].name in ordered[j].references():
                dependents[i] |= dependents[j]
    next_slots: list[int] = []
    for audience in ordered:
        timed = _audience_timed(audience)
        next_slots.append(HEADER + sum(1 for s in next_slots if s) if timed else 0)
    return Program(
        audiences=ordered,
        next_slots=next_slots,
        evaluators=evaluators,
        dispatch=dispatch,
        dependents=dependents,
        anchors=[list(dict.fromkeys(entries)) for entries in builder.anchors],
        windows=[list(dict.fromkeys(counts)) for counts in builder.windows],
        fact_slots=builder.width,
        facts=builder.slots,
        updates=builder.updates,
        fact_readers=builder.readers,
        context=builder.context,
    )
