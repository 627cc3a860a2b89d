"""The identity table of one partition of ids: the live counterpart of
:class:`~streamsync.identity.resolver.IdentityResolver`.

The evaluate service cannot resolve links in front of one engine: the records of an
anonymous id X and the link of X to person U are in the partitions of X, U's records in
U's. As Kafka Streams joins a stream to a table through a repartition topic, the records
that carry X (its own records, the links of X) are re-keyed by X to the identity topic,
and the task of X's partition keeps this table: per id its link (the first wins, a
conflicting one is counted and ignored, a re-sent one changes nothing) and, until it is
linked, its records within ``identity.anonymous_horizon``. What a link attributes to U
(X's held records at the link, X's later records as they come) is handed back by
:meth:`IdentityTable.release` to be re-keyed by U to U's task.

The table decides in event-time order, as the resolver does: links and records wait in
:attr:`IdentityTable.pending` until the table's clock (the identity task's watermark,
which follows the progress of every partition that writes the identity topic) passes
them, so "the first link wins" means the earliest, and a record is attributed by the
links at or before its time. Lateness is the resolver's: a link further behind the clock
than the allowed lateness takes effect at the clock's instant, and such a record is
moved to it, as the engine does with a record that late.

Everything is state (:meth:`changes`, :meth:`load`): links, held records, pending items
and counters are written to the task's store and changelog with each commit, so a
restored table agrees with the committed offsets of the identity topic.
"""

from __future__ import annotations

import heapq
import marshal
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from streamsync.audiences.compiler import NEVER
from streamsync.identity.config import IdentityConfig
from streamsync.identity.resolver import IdentityStats, Link
from streamsync.ingest.event import ALIAS, ANONYMOUS, IDENTIFY, Event
from streamsync.state.codec import CODEC_VERSION, decode_events, encode_events

#: Store keys of the table (beside the task's customers: see :mod:`streamsync.state.codec`)
IDENTITY_PREFIX = b"x:"
LINK_PREFIX = b"x:l:"
HELD_PREFIX = b"x:h:"
PENDING_PREFIX = b"x:p:"
TABLE_META_KEY = b"x:m"

_V = bytes([CODEC_VERSION])
_MARSHAL = 4
#: No instant released yet (the runtime's ``UNKNOWN``).
_NONE = -NEVER


@dataclass(frozen=True, slots=True)
class Roles:
    """What one record is to identity resolution: evaluated as its customer's own
    record (``own``), and the ids it is a record of (``records``) or links to its
    customer (``links``)."""

    own: bool
    records: tuple[str, ...] = ()
    links: tuple[str, ...] = ()


NOTHING = Roles(own=False)
OWN = Roles(own=True)


def roles(event: Event, config: IdentityConfig) -> Roles:
    """The resolver's reading of a record (:meth:`IdentityResolver.process`), for a
    runtime that sends each part where it belongs."""
    kind = event.id_kind
    if kind == ANONYMOUS or (kind == "email" and config.email):
        return Roles(own=False, records=(event.customer_id,))
    if event.kind == ALIAS:
        return Roles(own=False, links=(event.linked_id,)) if config.alias else NOTHING
    links: list[str] = []
    if event.linked_id and config.anonymous:
        links.append(event.linked_id)
    if config.email and event.kind == IDENTIFY:
        email = event.identifiers.get("email")
        if email and email != event.customer_id:
            links.append(email)
    return Roles(own=True, links=tuple(links)) if links else OWN


@dataclass(frozen=True, slots=True)
class PendingLink:
    """A link waiting for the table's clock: ``linked_id`` is ``person``'s from
    ``at_ms`` (``record_id``: the record that links it)."""

    linked_id: str
    at_ms: int
    person: str
    id_kind: str
    record_id: str | None


@dataclass(frozen=True, slots=True)
class Forward:
    """A record attributed to its (new) ``customer_id`` through ``event.via``, from
    instant ``from_ms`` on."""

    event: Event
    from_ms: int


#: a pending item: (instant, order, the link or the record)
_Pending = tuple[int, int, "PendingLink | Event"]


class IdentityTable:
    """Links and held records of the ids of one partition; see the module docstring."""

    def __init__(self, config: IdentityConfig, lateness_ms: int) -> None:
        self.horizon = config.anonymous_horizon_ms
        self.lateness = lateness_ms
        #: every instant before this was released
        self.closed = _NONE
        self.links: dict[str, Link] = {}
        self.held: dict[str, list[Event]] = {}
        self.pending: list[_Pending] = []
        self._next = 0
        self._expiry: deque[tuple[int, str]] = deque()
        self._conflict_ids: set[str] = set()
        self._counts = {"linked": 0, "forwarded": 0, "expired": 0, "ids_expired": 0}
        self._counts["conflicts"] = 0
        #: ids whose link or held records changed since the last :meth:`changes`
        self._dirty: set[str] = set()
        self._added: list[_Pending] = []
        self._released: list[int] = []
        self._meta_dirty = False

    # -- input -------------------------------------------------------------------------

    def record(self, event: Event) -> None:
        """A record of id ``event.customer_id`` (read from the identity topic)."""
        closed = self.closed
        if event.timestamp_ms < closed - self.lateness:
            event = replace(event, timestamp_ms=closed)  # too late: at the clock
        self._push(event.timestamp_ms, event)

    def link(self, link: PendingLink) -> None:
        """A link of ``link.linked_id`` (read from the identity topic)."""
        if link.at_ms < self.closed - self.lateness:
            link = replace(link, at_ms=self.closed)
        self._push(link.at_ms, link)

    def _push(self, at: int, item: PendingLink | Event) -> None:
        entry = (at, self._next, item)
        self._next += 1
        heapq.heappush(self.pending, entry)
        self._added.append(entry)
        self._meta_dirty = True

    # -- time --------------------------------------------------------------------------

    def release(self, limit: int) -> list[Forward]:
        """Decide every link and record before ``limit``, in event-time order; return
        what links attribute to a person (to be re-keyed by the person)."""
        if limit <= self.closed:
            return []
        out: list[Forward] = []
        pending = self.pending
        # The clock alone moving needs no write (as for the engine's): only a decision
        # changes what a restore must know, and ``closed`` only times later arrivals.
        self._meta_dirty = self._meta_dirty or bool(pending and pending[0][0] < limit)
        while pending and pending[0][0] < limit:
            _, number, item = heapq.heappop(pending)
            self._released.append(number)
            if isinstance(item, PendingLink):
                self._link(item, out)
                continue
            xid = item.customer_id
            found = self.links.get(xid)
            if found is None:
                self.held.setdefault(xid, []).append(item)
                self._expiry.append((item.timestamp_ms, xid))
                self._dirty.add(xid)
            else:
                out.append(self._forward(item, xid, found))
        self.closed = limit
        self._expire(limit - self.lateness - self.horizon)
        return out

    def _link(self, item: PendingLink, out: list[Forward]) -> None:
        xid = item.linked_id
        counts = self._counts
        found = self.links.get(xid)
        if found is not None:
            if found.person != item.person:
                rid = item.record_id  # once per record: a re-sent identify is one link
                if rid is None or rid not in self._conflict_ids:
                    counts["conflicts"] += 1
                    if rid is not None:
                        self._conflict_ids.add(rid)
            return
        link = self.links[xid] = Link(item.person, item.at_ms, item.id_kind, item.record_id)
        counts["linked"] += 1
        self._dirty.add(xid)
        held = self.held.pop(xid, None)
        if held is None:
            return
        oldest = item.at_ms - self.horizon
        for record in held:
            if record.timestamp_ms <= oldest:
                counts["expired"] += 1
            else:
                out.append(self._forward(record, xid, link))

    def _forward(self, record: Event, xid: str, link: Link) -> Forward:
        self._counts["forwarded"] += 1
        event = replace(record, customer_id=link.person, id_kind=link.id_kind, via=xid, source=None)
        return Forward(event, link.at_ms)

    def _expire(self, cutoff: int) -> None:
        """Drop held records at or before ``cutoff``: no later link can claim them."""
        expiry, held, counts = self._expiry, self.held, self._counts
        while expiry and expiry[0][0] <= cutoff:
            _, xid = expiry.popleft()
            records = held.get(xid)
            if records and records[0].timestamp_ms <= cutoff:
                del records[0]
                counts["expired"] += 1
                self._dirty.add(xid)
                self._meta_dirty = True
                if not records:
                    del held[xid]
                    counts["ids_expired"] += 1

    @property
    def waiting(self) -> bool:
        """Links or records not decided yet."""
        return bool(self.pending)

    @property
    def stats(self) -> IdentityStats:
        counts = self._counts
        return IdentityStats(
            ids_linked=counts["linked"],
            ids_held=len(self.held),
            ids_expired=counts["ids_expired"],
            records_held=sum(len(r) for r in self.held.values()),
            records_forwarded=counts["forwarded"],
            records_expired=counts["expired"],
            conflicting_links=counts["conflicts"],
        )

    # -- state -------------------------------------------------------------------------

    def changes(self) -> dict[bytes, bytes | None]:
        """Store keys changed since the last call (empty if nothing changed)."""
        out: dict[bytes, bytes | None] = {}
        for xid in self._dirty:
            key = xid.encode()
            link = self.links.get(xid)
            out[LINK_PREFIX + key] = (
                None
                if link is None
                else _V
                + marshal.dumps((link.person, link.at_ms, link.id_kind, link.record_id), _MARSHAL)
            )
            held = self.held.get(xid)
            out[HELD_PREFIX + key] = (
                None if not held else encode_events([(e.timestamp_ms, 0, e) for e in held])
            )
        self._dirty.clear()
        released = set(self._released)
        for at, number, item in self._added:
            if number not in released:
                out[_pending_key(number)] = _encode_pending(at, item)
        added = {number for _, number, _ in self._added}
        for number in self._released:
            if number not in added:
                out[_pending_key(number)] = None
        self._added.clear()
        self._released.clear()
        if out or self._meta_dirty:
            self._meta_dirty = False
            out[TABLE_META_KEY] = _V + marshal.dumps(
                {
                    "closed": self.closed,
                    "next": self._next,
                    "counts": self._counts,
                    "conflict_ids": sorted(self._conflict_ids),
                },
                _MARSHAL,
            )
        return out

    def load(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        """Take the table's keys as a store holds them (every ``x:`` key)."""
        expiry: list[tuple[int, str]] = []
        for key, value in items:
            body = value[1:]
            if key == TABLE_META_KEY:
                meta: dict[str, Any] = marshal.loads(body)
                self.closed = int(meta["closed"])
                self._next = int(meta["next"])
                self._counts.update(meta["counts"])
                self._conflict_ids = set(meta["conflict_ids"])
            elif key.startswith(LINK_PREFIX):
                person, at, id_kind, rid = marshal.loads(body)
                self.links[key[len(LINK_PREFIX) :].decode()] = Link(person, at, id_kind, rid)
            elif key.startswith(HELD_PREFIX):
                xid = key[len(HELD_PREFIX) :].decode()
                records = [e for _, _, e in decode_events(value)]
                self.held[xid] = records
                expiry.extend((e.timestamp_ms, xid) for e in records)
            elif key.startswith(PENDING_PREFIX):
                self.pending.append(_decode_pending(key, value))
        heapq.heapify(self.pending)
        expiry.sort()
        self._expiry = deque(expiry)


def _pending_key(number: int) -> bytes:
    return PENDING_PREFIX + number.to_bytes(8, "big")


def _encode_pending(at: int, item: PendingLink | Event) -> bytes:
    if isinstance(item, Event):
        return encode_events([(at, 0, item)])
    return (
        b"L"
        + _V
        + marshal.dumps(
            (item.linked_id, item.at_ms, item.person, item.id_kind, item.record_id), _MARSHAL
        )
    )


def _decode_pending(key: bytes, value: bytes) -> _Pending:
    number = int.from_bytes(key[len(PENDING_PREFIX) :], "big")
    if value[:1] == b"L":
        xid, at, person, id_kind, rid = marshal.loads(value[2:])
        return (at, number, PendingLink(xid, at, person, id_kind, rid))
    ((at, _, event),) = decode_events(value)
    return (at, number, event)
