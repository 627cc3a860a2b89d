"""The audience engine: events in (any arrival order), exact membership deltas out.

Independent of Kafka: the runtime feeds it decoded events and a clock, ``replay`` feeds
it a file, tests feed it lists. Time is event time in epoch milliseconds throughout.

Ordering. Records are buffered in a heap and released in ``(timestamp, arrival)`` order
once the clock passes them (with ``auto_advance``, the highest timestamp seen minus
``allowed_lateness_ms``), so any disorder within that bound yields exactly the in-order
result. A record that arrives behind the clock is applied at the earliest instant still
open (the clock's instant), in one of two ways (../shared/audiences.md, "Live clock and
late records"):

* *late* (behind the clock by at most the allowed lateness): its facts are updated with
  its own event time, so windows and deadlines are as if it had arrived in order. The
  transitions its evaluation emits at the clock's instant are marked ``correction``:
  they bring membership to what the records give in event-time order, where instants
  already emitted cannot be changed any more. Counted in ``stats.late``;
* *too late* (further behind): applied as if it had happened at the clock's instant.
  Counted in ``stats.too_late``.

Instants. Everything released for one timestamp is applied before anyone is evaluated
at it, because ``member(t)`` sees all records at ``t``; two records at the same
millisecond that cancel out produce no delta at all.

Timers. Every evaluation also yields the next instant at which membership could change
without new input (a deadline). Customers sit in a timer heap under that instant, so a
deadline fires on time even if the customer never sends another record; stale heap
entries are skipped rather than removed.

Residency. By default every customer stays in ``customers`` for ever, and record ids in
memory for the dedup horizon. A runtime that keeps customers and record ids in a store
(:mod:`streamsync.runtime.task`) gives the engine ``seen_before`` for the ids it has
forgotten (:meth:`forget_seen`) and a ``loader`` for the customers it does not hold,
:meth:`evict`s the least recently changed ones once they are stored, and
:meth:`admit`s the ones whose deadlines come due before advancing the clock. The
heap then holds the timers of resident customers only.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from streamsync.audiences.compiler import (
    CUSTOMER_ID,
    DEFAULT_MAX_KEYS,
    DUE,
    ID_KIND,
    IDS,
    MEMBERS,
    NEVER,
    PENDING,
    RIDS,
    Customer,
    Program,
    compact_id,
    compile_audiences,
    expand_id,
    window_records,
)
from streamsync.audiences.definition import Audience
from streamsync.deltas.record import ENTER, EXIT, MembershipDelta
from streamsync.ingest.event import Event

#: Records may arrive this much behind the newest one and still be applied in order.
DEFAULT_ALLOWED_LATENESS_MS = 5 * 60_000
_NO_LATE: set[tuple[int, bytes | str | None]] = set()
#: ``DUE`` of an evicted customer object: matches no heap entry, so its entries are stale.
_EVICTED = -NEVER - 1

#: Reads a customer the engine does not hold (``None``: a new customer).
Loader = Callable[[str], "Customer | None"]
#: Whether a record id the engine no longer holds was accepted before.
SeenBefore = Callable[[str], bool]


def _nothing(limit: int) -> None:
    """The default :attr:`Engine.before_advance`: nothing is held in front."""


def in_holdout(audience: str, customer_id: str, percent: float) -> bool:
    """Deterministic holdout assignment: the same answer on every instance and replay.

    blake2b rather than ``hash()``, which is salted per process.
    """
    if percent <= 0:
        return False
    digest = hashlib.blake2b(f"{audience}\0{customer_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * 100 < percent


_FIELD, _PAIR = "\x1f", "\x1e"


def pack_identifiers(identifiers: dict[str, str]) -> str:
    """One string for a customer's identifiers, ``\x1ekey\x1fvalue\x1e...``: a third of
    a dict's memory (state size per customer bounds customers per instance), and a pair
    can be looked for with one substring test, without unpacking."""
    return _PAIR + "".join(f"{k}{_FIELD}{v}{_PAIR}" for k, v in identifiers.items())


@functools.lru_cache(maxsize=8192)
def unpack_identifiers(packed: str) -> dict[str, str]:
    """The dict form of a packed string. Cached and shared: copy before handing it out."""
    return dict(pair.split(_FIELD, 1) for pair in packed[1:-1].split(_PAIR)) if packed else {}


@dataclass
class EngineStats:
    """Counters a runtime exports as metrics."""

    events: int = 0
    duplicates: int = 0
    #: records behind the clock by at most the allowed lateness (applied at their time)
    late: int = 0
    #: records behind the clock by more (applied at the clock's instant)
    too_late: int = 0
    deltas: int = 0
    #: records stamped more than the allowed lateness after they were received (a
    #: clock set ahead): applied at their own time, moving the clock only to received
    ahead: int = 0
    #: per-key fact entries dropped at the per-customer cap (``max_keys``)
    capped: int = 0


class Engine:
    """Evaluates compiled audiences for every customer; see the module docstring.

    With ``auto_advance`` (the default) the newest timestamp seen drives the clock. A
    consumer of several partitions turns it off and calls :meth:`advance_to` with its own
    watermark (the slowest partition's progress), so a partition that is read ahead of
    another does not make the other's records late.

    ``dedup_horizon_ms`` bounds how long record ids are remembered (in event time; ids
    are kept between one and two horizons). ``None`` remembers them for ever, which is
    what replay and tests want and what a long-running consumer cannot afford.
    """

    def __init__(
        self,
        audiences: Sequence[Audience],
        *,
        allowed_lateness_ms: int = DEFAULT_ALLOWED_LATENESS_MS,
        dedup_horizon_ms: int | None = None,
        auto_advance: bool = True,
        loader: Loader | None = None,
        seen_before: SeenBefore | None = None,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        if allowed_lateness_ms < 0:
            raise ValueError("allowed_lateness_ms must be >= 0")
        self.program: Program = compile_audiences(
            audiences, lateness_ms=allowed_lateness_ms, max_keys=max_keys
        )
        self._capped = 0
        self.lateness = allowed_lateness_ms
        self.dedup_horizon = dedup_horizon_ms
        self.auto_advance = auto_advance
        self._duplicates = self._late = self._too_late = self._deltas = self._ahead = 0
        #: resident customers, least recently changed first (see :meth:`take_touched`)
        self.customers: dict[str, Customer] = {}
        self._loader = loader
        self._seen_before = seen_before
        program = self.program
        self._next_slice = slice(program.next0, program.next0 + program.timed)
        self._next_slots = program.next_slots
        self._timed = [(i, slot) for i, slot in enumerate(program.next_slots) if slot]
        self._seq0 = program.seq0
        self._evaluators = program.evaluators
        self._dispatch = program.dispatch
        self._names = [a.name for a in program.audiences]
        self._versions = [a.version for a in program.audiences]
        self._holdouts = [a.holdout.percent if a.holdout else 0.0 for a in program.audiences]
        self._anchors = program.anchors
        self._windows = program.windows
        self._closure_cache: dict[int, int] = {}
        self._buffer: list[tuple[int, int, Event]] = []
        self._timers: list[tuple[int, int, Customer]] = []
        self._dirty: list[Customer] = []
        self._arrivals = 0
        self._timer_seq = 0
        self._max_seen = -NEVER
        self._closed = -NEVER  # every instant before this has been evaluated
        self._current = -NEVER  # the instant whose records are being applied
        self._seen: set[str] = set()
        self._seen_old: set[str] = set()
        self._seen_since = -NEVER
        self._out: list[MembershipDelta] = []
        #: customers given a late record at the open instant (their deltas are
        #: corrections), with each such record's ``(own time, stored id)``
        self._late_customers: dict[str, set[tuple[int, bytes | str | None]]] = {}
        self._correcting = False
        #: the last record accepted, as buffered: ``(instant, arrival, event)``
        self.last_accepted: tuple[int, int, Event] | None = None
        #: customers changed since :meth:`take_touched` (state export, runtime only)
        self._touched: set[str] = set()
        #: customers given, at the open instant, a record behind its own time that came
        #: through an identity link (their deltas are ``stitched``), and those given a late
        #: record of their own (their deltas are ``correction``s)
        self._stitched: set[str] = set()
        self._own_late: set[str] = set()
        self._stitching = False
        #: called with the limit before the clock moves to it: a stage in front of the
        #: engine (identity resolution) hands over what it holds until then
        self.before_advance: Callable[[int], None] = _nothing

    # -- input -----------------------------------------------------------------------------

    def process(self, event: Event) -> list[MembershipDelta]:
        """Take one record (in arrival order); return the deltas it lets the engine emit."""
        accepted = self._accept(event)
        if accepted is None:
            return []
        event, ts = accepted
        entry = (ts, self._arrivals, event)
        heapq.heappush(self._buffer, entry)
        self.last_accepted = entry
        return self._arrived(event, ts)

    def process_held(
        self, event: Event, hold: Callable[[Event, int], None]
    ) -> list[MembershipDelta]:
        """Take one record that a stage in front of the engine holds until the clock
        reaches it (an anonymous record, a link): deduplicated, timed (late, too late,
        ahead) and moving the clock exactly as :meth:`process` would, but given to
        ``hold`` with its arrival number instead of the reorder buffer; the stage hands
        it back through :meth:`attribute` from :attr:`before_advance`, or never. The
        arrival number keeps its place among records of the same instant (the later in
        the log wins a tie, wherever it waited)."""
        accepted = self._accept(event)
        if accepted is None:
            return []
        event, ts = accepted
        hold(event, self._arrivals)
        return self._arrived(event, ts)

    def _accept(self, event: Event) -> tuple[Event, int] | None:
        """The first half of taking a record: ``None`` for a duplicate, else the record
        (moved to the open instant when too late) and the instant it is buffered at."""
        rid = event.record_id
        if rid is not None:
            seen = self._seen
            before = self._seen_before
            if rid in seen or rid in self._seen_old or (before is not None and before(rid)):
                self._duplicates += 1
                return None
            seen.add(rid)
        ts = event.timestamp_ms
        closed = self._closed
        if ts < closed:
            if ts >= closed - self.lateness:
                self._late += 1  # applied at the open instant with its own time
            else:
                self._too_late += 1
                event = replace(event, timestamp_ms=closed)
            ts = closed
        return event, ts

    def _arrived(self, event: Event, ts: int) -> list[MembershipDelta]:
        """The second half, once the record is buffered or held at ``ts``: count the
        arrival and move the clock (a record stamped ahead only as far as it was
        received, plus the lateness)."""
        self._arrivals += 1
        received = event.received_ms
        if received is not None and ts > received + self.lateness:
            self._ahead += 1  # its own time waits; the clock moves as far as received
            ts = received + self.lateness
        if ts > self._max_seen:
            self._max_seen = ts
            if self.dedup_horizon is not None:
                self._rotate_seen(ts)
            limit = ts - self.lateness
            if self.auto_advance and limit > self._closed:
                self._advance(limit)
        return self._take()

    def attribute(self, event: Event, from_ms: int, arrival: int) -> None:
        """Buffer ``event`` (already accepted, by :meth:`process_held`) as a record of
        its customer from instant ``from_ms`` on: applied at ``max(own time, from_ms)``,
        or at the open instant if that has passed, with its own time for facts and
        windows, as a late record is, but never turned too late: a record held until its
        id was linked is as old as it is. ``arrival`` is the one :meth:`process_held`
        gave it. Called from :attr:`before_advance`."""
        at = max(event.timestamp_ms, from_ms, self._closed)
        heapq.heappush(self._buffer, (at, arrival, event))

    def process_attributed(self, event: Event, from_ms: int) -> list[MembershipDelta]:
        """Take a record of another id that a link attributes to ``event.customer_id``
        from instant ``from_ms`` on, handed over by a stage that held it elsewhere (the
        live identity task, which decided its timing): deduplicated as any record, then
        buffered as :meth:`attribute` does. It moves no clock: the task's watermark
        does. :attr:`last_accepted` is the buffered entry when it was taken."""
        rid = event.record_id
        if rid is not None:
            before = self._seen_before
            if rid in self._seen or rid in self._seen_old or (before is not None and before(rid)):
                self._duplicates += 1
                return []
            self._seen.add(rid)
        entry = (max(event.timestamp_ms, from_ms, self._closed), self._arrivals, event)
        heapq.heappush(self._buffer, entry)
        self._arrivals += 1
        self.last_accepted = entry
        return self._take()

    def advance_to(self, t: int) -> list[MembershipDelta]:
        """Treat the clock as standing at ``t``: apply every buffered record at or before
        ``t`` and fire every deadline at or before ``t``.

        Records that arrive later with a timestamp ``<= t`` are late (see the module
        docstring).
        """
        if t + 1 > self._closed:
            self._advance(t + 1)
        return self._take()

    def finish(self, until_ms: int | None = None) -> list[MembershipDelta]:
        """End of input: ``advance_to(until_ms)``, by default the latest timestamp seen."""
        until = self._max_seen if until_ms is None else until_ms
        if until == -NEVER:
            return self._take()
        return self.advance_to(until)

    @property
    def watermark(self) -> int:
        """Every instant before this is final."""
        return self._closed

    def _rotate_seen(self, ts: int) -> None:
        horizon = self.dedup_horizon
        assert horizon is not None
        if self._seen_since == -NEVER:
            self._seen_since = ts
        elif ts - self._seen_since >= horizon:
            self._seen_old = self._seen
            self._seen = set()
            self._seen_since = ts

    def _take(self) -> list[MembershipDelta]:
        """The pending deltas; the caller owns the returned list."""
        out = self._out
        if not out:
            return []
        self._out = []
        self._deltas += len(out)
        return out

    @property
    def stats(self) -> EngineStats:
        """Counters so far (a snapshot)."""
        events = self._arrivals + self._duplicates  # every record is one or the other
        capped = self._capped + sum(n for n, _ in self.program.context.capped.values())
        return EngineStats(
            events, self._duplicates, self._late, self._too_late, self._deltas, self._ahead, capped
        )

    def take_capped(self) -> dict[str, tuple[int, Event]]:
        """Customers whose per-key facts hit the cap since the last call: customer id ->
        (entries dropped, the record that made them drop); the caller owns the dict."""
        context = self.program.context
        capped = context.capped
        if not capped:
            return {}
        context.capped = {}
        self._capped += sum(n for n, _ in capped.values())
        return capped

    # -- time ------------------------------------------------------------------------------

    def _advance(self, limit: int) -> None:
        """Apply records and fire timers for every instant ``< limit``, in time order.

        An instant is closed (its customers evaluated) as soon as the next thing to
        happen is later than it; timers due at the same instant as records fire after
        the records are applied, since ``member(t)`` includes records at ``t``. This is
        the engine's hot loop, so applying a record is written out here rather than
        called.
        """
        self.before_advance(limit)
        buffer, timers, dirty, pop = self._buffer, self._timers, self._dirty, heapq.heappop
        customers, dispatch, evaluate = self.customers, self._dispatch, self._evaluate
        new_customer = self.program.new_customer
        touch = self._touched.add
        late = self._late_customers
        stitched, own_late = self._stitched, self._own_late
        context = self.program.context
        current = self._current
        while True:
            te = buffer[0][0] if buffer and buffer[0][0] < limit else NEVER
            if dirty and te != current:
                for c in dirty:
                    mask = c[PENDING]
                    c[PENDING] = 0
                    rids = c[RIDS]
                    c[RIDS] = None
                    if late and c[CUSTOMER_ID] in late:
                        cid = c[CUSTOMER_ID]
                        self._correcting = cid in own_late
                        self._stitching = cid in stitched
                        context.late = late[cid]
                        evaluate(c, current, mask, rids)
                        context.late = _NO_LATE
                        context.started = None
                        self._correcting = self._stitching = False
                    else:
                        evaluate(c, current, mask, rids)
                dirty.clear()
                if late:
                    late.clear()
                    stitched.clear()
                    own_late.clear()
            tt = timers[0][0] if timers else NEVER
            if tt < te:
                if tt >= limit:
                    break
                at, _, c = pop(timers)
                if c[DUE] == at:
                    touch(c[CUSTOMER_ID])
                    evaluate(c, at, 0, None)
                continue
            if te == NEVER:
                break
            current, _, event = pop(buffer)
            cid = event.customer_id
            # A customer is touched (written to state with the commit) only when the
            # record changed it: a record of an event no audience reads, from a customer
            # whose id kind and identifiers are known, changes nothing, and its customer
            # need not be encoded again (about 2% of the customers written on the
            # synthetic stream).
            known = customers.get(cid)
            if known is None:
                known = self._load(cid)
                if known is None:
                    known = customers[cid] = new_customer(cid)
                    touch(cid)
            c = known
            if c[ID_KIND] != event.id_kind:
                c[ID_KIND] = event.id_kind
                touch(cid)
            if event.timestamp_ms < current:  # a late record: see the module docstring
                late.setdefault(cid, set()).add((event.timestamp_ms, compact_id(event.record_id)))
                if event.via:
                    stitched.add(cid)
                else:
                    own_late.add(cid)
            found = event.identifiers
            if found:
                packed = c[IDS]
                if packed is None:
                    c[IDS] = pack_identifiers(found)
                    touch(cid)
                else:
                    for k, v in found.items():  # usually all known already
                        if _PAIR + k + _FIELD + v + _PAIR not in packed:
                            c[IDS] = pack_identifiers({**unpack_identifiers(packed), **found})
                            touch(cid)
                            break
            entries = dispatch.get(event.name)
            if not entries:
                continue
            mask = 0
            updated = False
            kind = event.kind
            for entry_kind, pred, update, readers in entries:
                if entry_kind == kind and (pred is None or pred(event)):
                    update(c, event)
                    mask |= readers
                    updated = True
            if updated:
                touch(cid)
            if not mask:
                continue
            if not c[PENDING]:
                dirty.append(c)
            c[PENDING] |= mask
            rid = event.record_id
            if rid is not None:
                rids = c[RIDS]
                if rids is None:
                    c[RIDS] = [rid]
                else:
                    rids.append(rid)
        self._current = current
        self._closed = limit
        self._compact_timers()

    def _load(self, cid: str) -> Customer | None:
        """A customer the engine does not hold, read through the loader and admitted."""
        loader = self._loader
        if loader is None:
            return None
        c = loader(cid)
        if c is not None:
            self.admit(c)
        return c

    def admit(self, c: Customer) -> None:
        """Hold customer ``c`` (read from a store) again, its deadline back on the heap.
        The caller makes sure it is not held already."""
        self.customers[c[CUSTOMER_ID]] = c
        due = c[DUE]
        if due < NEVER:
            self._timer_seq += 1
            heapq.heappush(self._timers, (due, self._timer_seq, c))

    def evict(self, keep: int) -> int:
        """Drop the least recently changed customers until at most ``keep`` are held;
        return how many were dropped. Only for a caller whose store holds every change
        handed out by :meth:`take_touched` (the loader must find them as they are
        here). Customers with records applied at the open instant stay."""
        customers = self.customers
        excess = len(customers) - keep
        if excess <= 0:
            return 0
        victims: list[str] = []
        for cid, c in customers.items():
            if len(victims) >= excess:
                break
            if not c[PENDING]:
                victims.append(cid)
        for cid in victims:
            c = customers.pop(cid)
            c[DUE] = _EVICTED  # its heap entries become stale
        self._compact_timers()
        return len(victims)

    def forget_seen(self) -> None:
        """Drop the record ids held in memory: for a caller whose ``seen_before`` now
        answers for every id accepted so far (it stored them)."""
        self._seen = set()
        self._seen_old = set()

    def _compact_timers(self) -> None:
        """Drop stale timer entries once the heap holds more than four entries per
        customer held (in place: ``_advance`` holds a reference)."""
        timers = self._timers
        if len(timers) <= 64 or len(timers) <= 4 * len(self.customers):
            return
        timers[:] = [entry for entry in timers if entry[2][DUE] == entry[0]]
        heapq.heapify(timers)

    # -- evaluation ------------------------------------------------------------------------

    def _closure(self, mask: int) -> int:
        """``mask`` plus every audience depending on one in it (computed once per mask;
        callers look in ``_closure_cache`` first)."""
        closed = 0
        deps = self.program.dependents
        m = mask
        while m:
            low = m & -m
            closed |= deps[low.bit_length() - 1]
            m ^= low
        self._closure_cache[mask] = closed
        return closed

    def _evaluate(self, c: Customer, t: int, mask: int, rids: list[str] | None) -> None:
        """Evaluate the audiences in ``mask`` (plus those due, plus dependents) at ``t``,
        emit changes, and move the customer's timer to its new earliest next change."""
        touched = mask  # the audiences the instant's records touched (rids: those records)
        due = c[DUE]
        # The earliest next change must be recomputed from every slot only when the
        # audience holding it may have moved it later; otherwise the minimum of the old
        # value and the fresh ones is exact.
        rescan = due <= t
        if rescan:
            for i, slot in self._timed:
                if c[slot] <= t:
                    mask |= 1 << i
        closed = self._closure_cache.get(mask)
        mask = self._closure(mask) if closed is None else closed
        members = c[MEMBERS]
        evaluators = self._evaluators
        next_slots = self._next_slots
        low_next = NEVER
        while mask:
            low = mask & -mask
            mask ^= low
            i = low.bit_length() - 1
            value, nxt = evaluators[i](c, t)
            slot = next_slots[i]
            if slot:
                if c[slot] == due:
                    rescan = True
                c[slot] = nxt
                if nxt < low_next:
                    low_next = nxt
            if value != bool(members & low):
                members ^= low
                c[MEMBERS] = members
                self._emit(c, i, t, value, rids, touched)
        new_due = min(c[self._next_slice], default=NEVER) if rescan else min(due, low_next)
        if new_due != due:
            c[DUE] = new_due
            if new_due < NEVER:
                self._timer_seq += 1
                heapq.heappush(self._timers, (new_due, self._timer_seq, c))

    def _emit(
        self, c: Customer, i: int, t: int, entered: bool, rids: list[str] | None, touched: int
    ) -> None:
        """Append one delta. ``record_ids`` cite every record that qualified the change,
        each once (:meth:`_cited`); without window counts to add, a change at an instant
        shares the instant's id list rather than copying it (it is never touched again)."""
        seq_slot = self._seq0 + i
        seq = c[seq_slot] + 1
        c[seq_slot] = seq
        if rids is not None:
            closed = self._closure_cache.get(touched)
            if closed is None:
                closed = self._closure(touched)
            if not closed >> i & 1:
                rids = None  # a deadline due at an instant with records for others only
        if rids is None or self._windows[i]:
            rids = self._cited(c, i, t, entered, rids)
        cid: str = c[CUSTOMER_ID]
        percent = self._holdouts[i]
        self._out.append(
            MembershipDelta(
                self._names[i],
                self._versions[i],
                cid,
                ENTER if entered else EXIT,
                t,
                seq,
                rids,
                {} if (packed := c[IDS]) is None else dict(unpack_identifiers(packed)),
                bool(percent) and in_holdout(self._names[i], cid, percent),
                c[ID_KIND],
                self._correcting,
                stitched=self._stitching,
            )
        )

    def _cited(
        self, c: Customer, i: int, t: int, entered: bool, rids: list[str] | None
    ) -> list[str]:
        return cited_records(self.program, c, i, t, entered, rids)

    # -- inspection ------------------------------------------------------------------------

    def members(self, customer_id: str) -> list[str]:
        """Audiences ``customer_id`` belongs to at the watermark."""
        c = self.customers.get(customer_id)
        if c is None:
            return []
        return [name for i, name in enumerate(self._names) if c[MEMBERS] >> i & 1]

    def member_counts(self) -> dict[str, tuple[int, int]]:
        """Members and holdout members of every audience at the watermark. A scan of
        every customer: for a runtime taking over restored state, not for each record."""
        members = [0] * len(self._names)
        holdout = [0] * len(self._names)
        names, percents = self._names, self._holdouts
        for c in self.customers.values():
            mask = c[MEMBERS]
            while mask:
                low = mask & -mask
                mask ^= low
                i = low.bit_length() - 1
                members[i] += 1
                if percents[i] and in_holdout(names[i], c[CUSTOMER_ID], percents[i]):
                    holdout[i] += 1
        return {name: (members[i], holdout[i]) for i, name in enumerate(names)}

    def overdue_members(self, before_ms: int, stored: Sequence[Customer] = ()) -> dict[str, int]:
        """Members, per audience, whose next scheduled change (for a member: the deadline
        of its exit) lies before ``before_ms``: deadlines the clock has not reached.
        ``stored`` adds overdue customers the engine does not hold.

        Only the overdue part of the timer heap is walked (a child is never earlier than
        its parent), so this costs nothing while deadlines fire on time. Audiences left
        only by a new record (no deadline) never count.
        """
        counts = [0] * len(self._names)
        timers = self._timers
        timed = self._timed
        seen: set[int] = set()
        overdue = list(stored)
        stack = [0] if timers and timers[0][0] < before_ms else []
        while stack:
            index = stack.pop()
            due, _, c = timers[index]
            if c[DUE] == due and id(c) not in seen:  # not a stale entry
                seen.add(id(c))
                overdue.append(c)
            for child in (2 * index + 1, 2 * index + 2):
                if child < len(timers) and timers[child][0] < before_ms:
                    stack.append(child)
        for c in overdue:
            members = c[MEMBERS]
            for i, slot in timed:
                if members >> i & 1 and c[slot] < before_ms:
                    counts[i] += 1
        return {name: counts[i] for i, name in enumerate(self._names) if self._next_slots[i]}

    # -- state export and import (streamsync.state) ---------------------------------------
    # The runtime persists an engine per input partition: changed customers after each
    # commit, the clock, and the records still waiting in the reorder buffer. These
    # methods expose exactly that and nothing of the evaluation itself.

    def take_touched(self) -> set[str]:
        """Ids of the customers changed since the last call (records applied or timers
        fired); the caller owns the returned set. They become the most recently changed,
        the last :meth:`evict` drops."""
        touched, self._touched = self._touched, set()
        customers = self.customers
        for cid in touched:
            customers[cid] = customers.pop(cid)
        return touched

    @property
    def arrivals(self) -> int:
        """Records accepted so far (not duplicates): the next record's arrival number."""
        return self._arrivals

    @property
    def buffered(self) -> list[tuple[int, int, Event]]:
        """The reorder buffer as ``(timestamp, arrival, event)`` (a heap; do not modify)."""
        return self._buffer

    def clock(self) -> dict[str, int]:
        """The engine's scalar state: clock positions, counters, dedup rotation."""
        return {
            "closed": self._closed,
            "current": self._current,
            "max_seen": self._max_seen,
            "arrivals": self._arrivals,
            "timer_seq": self._timer_seq,
            "seen_since": self._seen_since,
            "duplicates": self._duplicates,
            "late": self._late,
            "too_late": self._too_late,
            "deltas": self._deltas,
            "ahead": self._ahead,
        }

    def restore(
        self,
        clock: dict[str, int],
        customers: dict[str, Customer],
        buffer: list[tuple[int, int, Event]],
        seen: set[str],
    ) -> None:
        """Replace this (fresh) engine's state with exported state: customers with a
        pending deadline go back on the timer heap, the buffer is re-heaped."""
        self._closed = clock["closed"]
        self._current = clock["current"]
        self._max_seen = clock["max_seen"]
        self._arrivals = clock["arrivals"]
        self._timer_seq = clock["timer_seq"]
        self._seen_since = clock["seen_since"]
        self._duplicates = clock["duplicates"]
        self._late = clock["late"]
        self._too_late = clock["too_late"]
        self._deltas = clock["deltas"]
        self._ahead = clock.get("ahead", 0)
        self.customers = customers
        timers = []
        for c in customers.values():
            due = c[DUE]
            if due < NEVER:
                self._timer_seq += 1
                timers.append((due, self._timer_seq, c))
        heapq.heapify(timers)
        self._timers = timers
        self._buffer = list(buffer)
        heapq.heapify(self._buffer)
        self._seen = seen
        self._seen_old = set()
        self._touched = set()


def cited_records(
    program: Program, c: Customer, i: int, t: int, entered: bool, rids: list[str] | None
) -> list[str]:
    """The records a change of audience ``i`` at ``t`` stands on, oldest fact first.

    ``rids`` are the records applied at ``t`` that touched the audience (``None``:
    the change is a deadline's). A deadline's change cites the latest records whose
    deadline is ``t`` (``anchors``; if none is, as at the end of a sticky period,
    every latest record the audience reads). A window count cites every record of
    the block it stands on: when the window passes at ``t`` (an expiry), when the
    change is an enter (all ``n`` views, not only the one that made them ``n``), or
    when a record of ``t`` is in the block (a ``not`` count). A record several facts
    hold is cited once.
    """
    cited: list[str] = []
    anchors = program.anchors[i] if rids is None else ()
    for slot, offsets, captured in anchors:
        rid = c[slot + 1]
        if rid is None:
            continue
        base = c[slot]
        if captured:
            if c[slot + 2] is None:
                continue
            base += c[slot + 2]
        if t - base in offsets:  # this record's deadline is the change
            cited.append(expand_id(rid))
    instant: set[bytes | str | None] | None = None
    for slot, n, within in program.windows[i]:
        found = window_records(c, slot, n)
        if found is None:
            continue
        first, ids = found
        end = first + within
        if end < t:
            continue
        if end > t and not entered:
            if rids is None:
                continue
            if instant is None:
                instant = {compact_id(rid) for rid in rids}
            if instant.isdisjoint(ids):
                continue
        cited.extend(expand_id(rid) for rid in ids)
    if rids is not None:
        cited.extend(rids)
    elif not cited:  # e.g. a sticky period's end: the latest records it read
        cited = [expand_id(rid) for slot, _, _ in anchors if (rid := c[slot + 1])]
    return list(dict.fromkeys(cited)) if len(cited) > 1 else cited
