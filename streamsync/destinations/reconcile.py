"""The difference between what a destination should hold and what it confirmed.

Delivery is reconciliation, as a controller converges desired to actual state: for each
owned partition, the desired members (:mod:`~streamsync.destinations.desired`) are
compared with the acknowledged ones (:mod:`~streamsync.destinations.acknowledged`), and
each difference becomes a :class:`Repair` the sink sends like any other change:

* desired, not acknowledged (or only pending) -> an add: *backfill* of a new destination,
  of an audience added to its list, of what was missed while it was away;
* acknowledged (or pending), not desired -> a remove, to the identity the value was
  acknowledged under: *detach* of an audience taken off the list or retired (no longer
  in the table), and exits whose tombstones compaction already dropped;
* acknowledged, desired, but not as that value -> an add that the sink turns into a
  *move*: the member's identity for this destination changed (another identifier came
  first in ``identifiers.order``, or was learnt since), or the value name did (the member
  is a holdout now, or no longer). The sink removes the acknowledged value from the
  profile it was acknowledged on, then adds the desired one
  (:meth:`~streamsync.destinations.sink.DeliverySink.settled_already`).

Without the table (no evaluate has written it yet) nothing is desired but what the deltas
say; the only repairs then are detaches of audiences no longer routed, of customers the
rollout no longer includes, and of holdout markers when holdouts are now skipped.

The same comparison, per change, runs in the sink before anything is sent
(:meth:`~streamsync.destinations.sink.DeliverySink.settled_already`): an add already
confirmed, or a remove of a value never acknowledged, is not sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from streamsync.deltas.membership import Member, MemberKey
from streamsync.deltas.record import MembershipDelta
from streamsync.destinations.acknowledged import Acked, holds
from streamsync.destinations.desired import DesiredFilter


@dataclass(slots=True)
class Repair:
    """One change reconciliation decided on, for one customer and audience."""

    customer_id: str
    audience: str
    enter: bool
    holdout: bool
    #: the enter's details for an add (from the table); a synthetic exit for a remove
    delta: MembershipDelta
    #: for a remove: the identity the value was acknowledged under
    identity: object | None = None


def member_delta(member: Member) -> MembershipDelta:
    """The enter a table record stands for (what the clients build requests from)."""
    return MembershipDelta(
        member.audience, member.version, member.customer_id, "enter", member.since_ms,
        member.seq, identifiers=dict(member.identifiers), holdout=member.holdout,
        id_kind=member.id_kind,
    )  # fmt: skip


def removal_delta(audience: str, customer: str, acked: Acked, now_ms: int) -> MembershipDelta:
    """The exit a detach stands for: no version or seq of its own (it comes from no
    definition), the time it was decided."""
    return MembershipDelta(audience, 0, customer, "exit", now_ms, 0, holdout=acked.holdout)


def plan_repairs(
    desired: Mapping[MemberKey, Member] | None,
    acked: Mapping[MemberKey, Acked],
    want: DesiredFilter,
    identify: Callable[[MembershipDelta], Any | None] | None = None,
) -> list[Repair]:
    """The repairs that bring one partition from ``acked`` to ``desired`` (members that
    passed ``want``; ``None``: no table, see the module docstring). Adds first, in the
    table's order, then removes. ``identify`` is the client's: with it, a value confirmed
    under another identity (or value name) than the member's now is planned as an add,
    which the sink sends as a move; a member it finds no identity for keeps its value."""
    repairs: list[Repair] = []
    now_ms = int(time.time() * 1000)
    if desired is not None:
        for key, member in desired.items():
            entry = acked.get(key)
            add = member_delta(member)
            if entry is not None and not entry.pending:
                if identify is None:
                    continue
                identity = identify(add)
                if identity is None or holds(entry, identity, member.holdout):
                    continue
            repairs.append(Repair(member.customer_id, member.audience, True, member.holdout, add))
    for (audience, customer), entry in acked.items():
        if desired is not None:
            if (audience, customer) in desired:
                continue
        elif (
            want.routed(audience)
            and want.includes(audience, customer)
            and not (entry.holdout and want.holdout == "skip")
        ):
            continue
        repairs.append(
            Repair(customer, audience, False, entry.holdout,
                   removal_delta(audience, customer, entry, now_ms), entry.identity)
        )  # fmt: skip
    return repairs
