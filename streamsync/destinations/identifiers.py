"""Reading a customer's identifiers off a delta, whatever its key is.

A delta's ``customer_id`` is what ``id_kind`` says (a Customer.io ``id``, a ``cio_id``,
an ``email``, or a ``customer_id`` trait); ``identifiers`` holds the others the engine
saw (``email``, ``phone``, ``cio_id``). :func:`identifier` answers "what is this
customer's <source>?" from either place.
"""

from __future__ import annotations

from typing import Literal

from streamsync.deltas.record import MembershipDelta

Source = Literal["customer_id", "email", "phone", "cio_id"]
#: id kinds that mean "customer_id is the customer's own id" (external_id, uid)
_OWN_ID_KINDS = frozenset({"id", "customer_id"})


def identifier(delta: MembershipDelta, source: str) -> str | None:
    if source == "customer_id":
        if delta.id_kind in _OWN_ID_KINDS:
            return delta.customer_id or None
        return delta.identifiers.get("id") or None
    if delta.id_kind == source:
        return delta.customer_id or None
    return delta.identifiers.get(source) or None
