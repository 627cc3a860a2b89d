"""The versioned binary codec of engine state.

Every value starts with one byte, :data:`CODEC_VERSION`; the body is ``marshal`` (the
standard library's C serialiser: the fastest way to turn nested lists, sets, tuples and
scalars into bytes and back, and unlike pickle it cannot run code when loading). The
customer layout itself (which slot holds which fact) depends on the compiled audiences,
so each partition's meta record carries :func:`fingerprint` of the program: state
written under other definitions is detected at restore instead of being misread.

Keys of a partition store (also the changelog keys):

* ``c:<customer id>`` - one customer: its timer (``DUE``, 8 bytes, signed big-endian)
  then the engine's list, minus transient slots. The timer comes first so the store can
  index customers by it without unmarshalling them;
* ``e:<segment>`` - records accepted in one commit and still buffered then, with the
  instant they are applied at, their arrival numbers and their own event times;
* ``i:<segment>`` - record ids seen in one commit (deduplication across restarts);
* ``m`` - the partition's meta record: codec version, fingerprint, engine clock,
  per-topic newest event time, live segments, customer count and audience sizes;
* ``x:...`` - the partition's identity table, when the service resolves identity
  (:mod:`streamsync.identity.table`: links, held records, undecided items, its meta);
* ``d`` - the audience definitions the customers were evaluated with (written when they
  change): what a later start with other definitions compiles to read the stored
  customers and turn them into its own layout (:mod:`streamsync.audiences.migration`).

Kept by the store only (derived from the customers, never in the changelog):

* ``t:<due><customer id>`` - the timer index: one key per customer value written with a
  deadline, in time order (``due`` offset by 2**63, 8 bytes big-endian), so the customers
  whose deadlines a watermark passes are found without holding every customer in memory.
  Entries may be stale (the customer was written again with another deadline); a
  reader checks the customer's own ``DUE`` (see :mod:`streamsync.runtime.task`).
* ``r:<record id>`` - the record id index: every id of the live ``i:`` segments, so
  deduplication asks the store instead of holding a day of ids in memory.
"""

from __future__ import annotations

import hashlib
import marshal
from typing import Any

from streamsync.audiences.compiler import DUE, NULL, PENDING, RIDS, Customer, Program
from streamsync.errors import NeedsOperator
from streamsync.ingest.event import Event, SourcePosition

#: Bump when the encoding changes; values of another version are rejected.
CODEC_VERSION = 2
#: Bump when the compiler's customer layout changes without the definitions changing.
LAYOUT_VERSION = 3
_MARSHAL = 4
_V = bytes([CODEC_VERSION])
_NULL_MARK = ("\x00streamsync.null",)

CUSTOMER_PREFIX = b"c:"
EVENTS_PREFIX = b"e:"
IDS_PREFIX = b"i:"
META_KEY = b"m"
DEFINITIONS_KEY = b"d"
TIMER_PREFIX = b"t:"
RECORD_ID_PREFIX = b"r:"
_OFFSET = 1 << 63


class StateError(NeedsOperator):
    """Stored state cannot be used: another codec version, or other audience definitions
    that were not recorded with it (not the input's mistake, the operator's to resolve:
    exit status 1)."""


#: Fields of an audience that say who owns it and where it goes, not who is a member:
#: editing them leaves the stored state valid.
_NOT_EVALUATED = frozenset({"owner", "description", "destinations"})


def fingerprint(program: Program) -> str:
    """What the stored customer layout depends on: every definition as it is evaluated
    (in compiled order; owner, description and destinations left out, so editing those
    does not refuse the state), the slot layout and :data:`LAYOUT_VERSION`."""
    h = hashlib.blake2b(digest_size=12)
    h.update(f"{LAYOUT_VERSION}|{program.width}|{program.next_slots}".encode())
    for audience in program.audiences:
        h.update(audience.model_dump_json(exclude=set(_NOT_EVALUATED)).encode())
    return h.hexdigest()


def _load(data: bytes) -> Any:
    if not data or data[0] != CODEC_VERSION:
        version = data[0] if data else None
        raise StateError(f"state codec version {version} is not {CODEC_VERSION}")
    return marshal.loads(data[1:])


def encode_customer(c: Customer) -> bytes:
    """The stored form of ``c``. Once per changed customer per commit: a trait set to
    null (the only place :data:`NULL` is) is rare, so the slots are looked for it with
    the list's own C search and copied as they are, not passed one by one in Python."""
    out = [_NULL_MARK if x is NULL else x for x in c] if NULL in c else c.copy()
    out[PENDING] = 0
    out[RIDS] = None
    due: int = c[DUE]
    return _V + due.to_bytes(8, "big", signed=True) + marshal.dumps(out, _MARSHAL)


def decode_customer(data: bytes) -> Customer:
    if not data or data[0] != CODEC_VERSION:
        _load(data)  # raises StateError naming the version
    c: Customer = marshal.loads(data[9:])
    if _NULL_MARK in c:  # rare (see encode_customer)
        for i, x in enumerate(c):
            if type(x) is tuple and x == _NULL_MARK:
                c[i] = NULL
    return c


def customer_due(data: bytes) -> int:
    """The deadline of an encoded customer, without decoding it (``NEVER``: none)."""
    return int.from_bytes(data[1:9], "big", signed=True)


def timer_key(due: int, customer_key: bytes) -> bytes:
    """The timer index key of the customer stored under ``customer_key`` (``c:<id>``)."""
    return TIMER_PREFIX + (due + _OFFSET).to_bytes(8, "big") + customer_key[len(CUSTOMER_PREFIX) :]


def timer_bound(due: int) -> bytes:
    """The first index key at ``due``: entries before it are due earlier."""
    return TIMER_PREFIX + (due + _OFFSET).to_bytes(8, "big")


def parse_timer_key(key: bytes) -> tuple[int, bytes]:
    """``(due, customer key)`` of a timer index key."""
    return int.from_bytes(key[2:10], "big") - _OFFSET, CUSTOMER_PREFIX + key[10:]


def _event_tuple(ts: int, arrival: int, e: Event) -> tuple[Any, ...]:
    src = e.source
    return (
        ts,
        arrival,
        e.customer_id,
        e.kind,
        e.name,
        e.record_id,
        e.properties,
        e.traits,
        e.identifiers,
        None if src is None else (src.topic, src.partition, src.offset),
        e.id_kind,
        e.timestamp_ms,
        e.received_ms,
        e.via,
    )


def encode_events(entries: list[tuple[int, int, Event]]) -> bytes:
    """Buffered records: ``(instant, arrival, event)``. The instant is when the engine
    applies the record; a late record's own event time (earlier) is kept with it."""
    return _V + marshal.dumps([_event_tuple(*entry) for entry in entries], _MARSHAL)


def decode_events(data: bytes) -> list[tuple[int, int, Event]]:
    out = []
    for ts, arrival, cid, kind, name, rid, props, traits, ids, src, id_kind, own, *rest in _load(
        data
    ):
        source = None if src is None else SourcePosition(*src)
        received = rest[0] if rest else None  # segments written before received times
        event = Event(cid, kind, name, own, rid, props, traits, ids, source, id_kind, received)
        if len(rest) > 1:  # the linked id a record came through (written since identity)
            event.via = rest[1]
        out.append((ts, arrival, event))
    return out


def encode_ids(ids: list[str]) -> bytes:
    return _V + marshal.dumps(ids, _MARSHAL)


def decode_ids(data: bytes) -> list[str]:
    ids: list[str] = _load(data)
    return ids


def encode_meta(meta: dict[str, Any]) -> bytes:
    return _V + marshal.dumps(meta, _MARSHAL)


def decode_meta(data: bytes) -> dict[str, Any]:
    meta: dict[str, Any] = _load(data)
    return meta


def segment_key(prefix: bytes, segment: int) -> bytes:
    return prefix + segment.to_bytes(8, "big")
