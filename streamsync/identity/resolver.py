"""Identity resolution in front of the engine: links, and the records of ids that are
not linked yet (../shared/audiences.md, "Identity").

A record with a customer key goes to the engine as it is; one that also carries an
``anonymousId`` (or is an identify carrying an email, when email links are on) is
also a link of that id to the customer at the record's time, and an alias is only a
link. A record whose only id is not a customer key (an ``anonymousId``; an email, when
email links are on) belongs to whoever its id is linked to.

Links and such records wait here in event-time order and are handed over when the
engine's clock reaches them (:attr:`Engine.before_advance`), so links are decided in
event-time order ("the first link of an id wins" means the earliest) and a record is
attributed by the links at or before its time, whatever order they arrived in within
the allowed lateness. The engine still decides duplicates and lateness for them, as
for any record (:meth:`Engine.process_held`).

At a link of X to U at ``l``, X's held records go to U's evaluation from ``l`` on
(:meth:`Engine.attribute`): applied with their own times, so facts and windows are as if
they had been U's all along, and a change at an instant already emitted comes out at
``l``, marked ``stitched``. Later records of X are U's at their own times. Records of
an unlinked id are held for ``anonymous_horizon``: at the link, those older than that
are dropped and counted, and records that can no longer be claimed by any later link
are dropped as the clock moves on, so what is held stays bounded.

An id's records are the records keyed by it as a non-customer id; records whose
``userId`` is that id stay that customer's.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from streamsync.audiences.engine import Engine
from streamsync.deltas.record import MembershipDelta
from streamsync.identity.config import IdentityConfig
from streamsync.ingest.event import ALIAS, ANONYMOUS, IDENTIFY, Event


@dataclass
class IdentityStats:
    """What identity resolution did: the counters a runtime exports as metrics."""

    #: ids linked to a person (first links)
    ids_linked: int = 0
    #: ids with records held, not linked yet (now)
    ids_held: int = 0
    #: ids whose every held record was dropped at the horizon
    ids_expired: int = 0
    #: records held now, waiting for a link
    records_held: int = 0
    #: records attributed to a person through a link
    records_forwarded: int = 0
    #: held records dropped at the horizon (at the link, or once no link can claim them)
    records_expired: int = 0
    #: later links of an id to another person than its first (counted and ignored)
    conflicting_links: int = 0


@dataclass(frozen=True, slots=True)
class Link:
    """Id ``linked_id`` is ``person``'s from ``at_ms`` on (``record_id``: the record
    that linked it)."""

    person: str
    at_ms: int
    id_kind: str
    record_id: str | None


def _nothing(event: Event) -> None:
    """The default :attr:`IdentityResolver.on_forward`."""


#: a pending item: (event time, order here, id, the linking event or None, the record or
#: None, the record's arrival number in the engine)
_Pending = tuple[int, int, str, "Event | None", "Event | None", int]


class IdentityResolver:
    """The identity stage of one engine (see the module docstring); :meth:`process`
    replaces ``engine.process`` for every record."""

    def __init__(self, engine: Engine, config: IdentityConfig) -> None:
        self.engine = engine
        self.config = config
        self._anonymous = config.anonymous
        self._alias = config.alias
        self._email = config.email
        self._horizon = config.anonymous_horizon_ms
        #: linked id -> its link (first wins; permanent)
        self.links: dict[str, Link] = {}
        self._pending: list[_Pending] = []
        self._arrivals = 0
        #: unlinked id -> its records with their arrival numbers, in the order they were
        #: released (event time)
        self._held: dict[str, list[tuple[Event, int]]] = {}
        self._expiry: deque[tuple[int, str]] = deque()
        self._linked = self._forwarded = self._expired = self._ids_expired = 0
        self._conflicts = self._records_held = 0
        #: ids of the records of conflicting links counted (only conflicts are kept)
        self._conflict_ids: set[str] = set()
        #: given each record attributed through a link, as the person's (``via`` set):
        #: ``explain`` lists them among the person's records
        self.on_forward: Callable[[Event], None] = _nothing
        engine.before_advance = self._release

    def process(self, event: Event) -> list[MembershipDelta]:
        """Take one record (in arrival order); return the deltas the engine emits."""
        kind = event.id_kind
        if kind == ANONYMOUS or (kind == "email" and self._email):
            return self.engine.process_held(event, self._hold_record)
        if event.kind == ALIAS:
            if not self._alias:
                return []
            return self.engine.process_held(event, self._hold_alias)
        if event.linked_id and self._anonymous:
            self._hold_link(event)
        if self._email and event.kind == IDENTIFY:
            email = event.identifiers.get("email")
            if email and email != event.customer_id:
                self._push(event.timestamp_ms, email, event, None)
        return self.engine.process(event)

    def _push(
        self, ts: int, xid: str, link: Event | None, record: Event | None, arrival: int = -1
    ) -> None:
        heapq.heappush(self._pending, (ts, self._arrivals, xid, link, record, arrival))
        self._arrivals += 1

    def _hold_record(self, event: Event, arrival: int) -> None:
        self._push(event.timestamp_ms, event.customer_id, None, event, arrival)

    def _hold_alias(self, event: Event, arrival: int) -> None:
        self._hold_link(event)

    def _hold_link(self, event: Event) -> None:
        # A link further behind the clock than the allowed lateness takes effect at the
        # clock's instant, as a record that late is applied there (an alias has been
        # timed by the engine already; an identify is timed here, beside its record).
        ts = event.timestamp_ms
        closed = self.engine.watermark
        if ts < closed - self.engine.lateness:
            ts = closed
        self._push(ts, event.linked_id, event, None)

    def _release(self, limit: int) -> None:
        """Before the engine's clock moves to ``limit``: every link and record before it,
        in event-time order."""
        pending = self._pending
        pop = heapq.heappop
        while pending and pending[0][0] < limit:
            ts, _, xid, link, record, arrival = pop(pending)
            if link is not None:
                self._link(xid, link, ts)
                continue
            assert record is not None
            found = self.links.get(xid)
            if found is None:
                held = self._held.get(xid)
                if held is None:
                    self._held[xid] = [(record, arrival)]
                else:
                    held.append((record, arrival))
                self._records_held += 1
                self._expiry.append((ts, xid))
            else:
                self._forward(record, arrival, xid, found)
        self._expire(limit - self.engine.lateness - self._horizon)

    def _link(self, xid: str, event: Event, ts: int) -> None:
        person = event.customer_id
        found = self.links.get(xid)
        if found is not None:
            if found.person != person:
                # Once per record: a re-sent identify is one link, not two.
                rid = event.record_id
                if rid is None or rid not in self._conflict_ids:
                    self._conflicts += 1
                    if rid is not None:
                        self._conflict_ids.add(rid)
            return
        link = self.links[xid] = Link(person, ts, event.id_kind, event.record_id)
        self._linked += 1
        held = self._held.pop(xid, None)
        if held is None:
            return
        self._records_held -= len(held)
        oldest = ts - self._horizon
        for record, arrival in held:
            if record.timestamp_ms <= oldest:
                self._expired += 1
            else:
                self._forward(record, arrival, xid, link)

    def _forward(self, record: Event, arrival: int, xid: str, link: Link) -> None:
        self._forwarded += 1
        stitched = replace(record, customer_id=link.person, id_kind=link.id_kind, via=xid)
        self.on_forward(stitched)
        self.engine.attribute(stitched, link.at_ms, arrival)

    def _expire(self, cutoff: int) -> None:
        """Drop held records at or before ``cutoff``: every link still to come is later
        than ``cutoff`` plus the horizon, so none of them could claim them."""
        expiry, held = self._expiry, self._held
        while expiry and expiry[0][0] <= cutoff:
            _, xid = expiry.popleft()
            records = held.get(xid)
            if records and records[0][0].timestamp_ms <= cutoff:
                del records[0]
                self._expired += 1
                self._records_held -= 1
                if not records:
                    del held[xid]
                    self._ids_expired += 1

    def links_of(self, person: str) -> dict[str, Link]:
        """The ids linked to ``person``, each with its link (a scan: for ``explain``)."""
        return {xid: link for xid, link in self.links.items() if link.person == person}

    @property
    def stats(self) -> IdentityStats:
        """Counters so far (a snapshot)."""
        return IdentityStats(
            self._linked,
            len(self._held),
            self._ids_expired,
            self._records_held,
            self._forwarded,
            self._expired,
            self._conflicts,
        )
