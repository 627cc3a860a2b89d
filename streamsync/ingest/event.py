"""The one typed event every decoder produces and the audience engine consumes.

A plain slotted dataclass rather than a pydantic model: one is built per record on the
hot path, and the decoders have already checked every field they fill in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: ``kind`` values. Data Pipelines records keep their ``type``; reporting webhooks are
#: ``"webhook"`` and carry their ``metric`` as the event name.
TRACK = "track"
IDENTIFY = "identify"
PAGE = "page"
SCREEN = "screen"
WEBHOOK = "webhook"
KINDS = frozenset({TRACK, IDENTIFY, PAGE, SCREEN, WEBHOOK})
#: Documented Data Pipelines call types that are valid but not evaluated: they are
#: counted as :class:`Skipped` with the call type as the reason, not dead-lettered.
GROUP = "group"
ALIAS = "alias"

#: What a customer key is: ``id`` (Data Pipelines ``userId`` or a webhook's
#: ``identifiers.id``: the workspace's own person id), ``cio_id`` (Customer.io's internal
#: id), ``email``, or ``customer_id`` (the deprecated webhook field, a last fallback).
ID_KINDS = ("id", "cio_id", "email", "customer_id")
#: ``id_kind`` of a record whose only id is its ``anonymousId``: decoded only where
#: identity links are resolved (:mod:`streamsync.identity`), never a customer of its own.
ANONYMOUS = "anonymous"

#: ``Skipped.reason`` for a valid record that names no customer.
NO_CUSTOMER = "no_customer"
#: ``Skipped.reason`` for a batch envelope with no records in it.
EMPTY_BATCH = "empty_batch"


@dataclass(slots=True, frozen=True)
class Skipped:
    """A valid record that is deliberately not evaluated; ``reason`` is counted
    (:data:`NO_CUSTOMER`, :data:`EMPTY_BATCH`, or a skipped call type such as ``group``)."""

    reason: str


@dataclass(slots=True, frozen=True)
class SourcePosition:
    """Where a record came from: enough to find it again on the broker."""

    topic: str
    partition: int
    offset: int


@dataclass(slots=True)
class Event:
    """One Customer.io record, decoded.

    ``name`` is the track event name (``"Order Completed"``), the webhook metric
    (``"sent"``), or the page/screen name; for identify it is ``"identify"``.
    ``timestamp_ms`` is event time in epoch milliseconds (webhook seconds are scaled).
    ``record_id`` is ``messageId`` or ``event_id``; duplicates share it.
    ``identifiers`` holds what is known to reach the customer: ``email``, ``phone``,
    ``cio_id`` (from traits, context.traits or webhook ``data.identifiers``).
    ``id_kind`` names what ``customer_id`` is (see :data:`ID_KINDS`), so the delivery
    side can map it to the identifier a destination expects.
    ``linked_id`` is an id the record links to ``customer_id`` (the ``anonymousId``
    beside a ``userId``, an alias's ``previousId``; ``""``: none), filled only where
    identity links are resolved. ``via`` is the linked id a record was attributed
    through (``""``: the customer's own record); see :mod:`streamsync.identity`.
    ``received_ms`` is when the pipeline received the record (``receivedAt``, or the
    Kafka record's timestamp; ``None``: not known): a bound on how far the record's own
    time may move its partition's clock (see :func:`progress_ms`).
    """

    customer_id: str
    kind: str
    name: str
    timestamp_ms: int
    record_id: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    traits: dict[str, Any] = field(default_factory=dict)
    identifiers: dict[str, str] = field(default_factory=dict)
    source: SourcePosition | None = None
    id_kind: str = "id"
    #: not part of what the record says (the same record received twice is equal)
    received_ms: int | None = field(default=None, compare=False)
    linked_id: str = ""
    via: str = ""


def progress_ms(event: Event, tolerance_ms: int) -> int:
    """How far ``event`` moves its partition's clock: its event time, but no more than
    ``tolerance_ms`` past when it was received. One customer's device clock set hours
    ahead would otherwise close every other customer's instants early (deadlines firing
    hours before their time, the others' records turned late); the record itself is
    still applied at its own time, when the clock gets there."""
    ts = event.timestamp_ms
    received = event.received_ms
    if received is not None and ts > received + tolerance_ms:
        return received + tolerance_ms
    return ts
