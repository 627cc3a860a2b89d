"""The difference between what a destination should hold and what it confirmed.

Delivery is reconciliation, as a controller converges desired to actual state: for each
owned partition, the desired members (:mod:`~streamsync.destinations.desired`) are
compared with the acknowledged ones (:mod:`~streamsync.destinations.acknowledged`), and
each difference becomes a :class:`Repair` the sink sends like any other change:

* desired, not acknowledged (or only pending) -> an add: *backfill* of a new destination,
  of an audience added to its list, of what was missed while it was away;
* acknowledged (or pending), not desired -> a remove, to the identity the value was
  acknowledged under: *detach* of an audience taken off the list or retired (no longer
  in the table), and exits whose tombstones compaction already dropped.

Without the table (no evaluate has written it yet) nothing is desired but what the deltas
say; the only repairs then are detaches of audiences no longer routed, and of customers
the rollout no longer includes.

The same comparison, per change, runs in the sink before anything is sent
(:meth:`~streamsync.destinations.sink.DeliverySink.settled_already`): an add already
confirmed, or a remove of a value never acknowledged, is not sent.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from streamsync.deltas.membership import Member, MemberKey
from streamsync.deltas.record import MembershipDelta
from streamsync.destinations.acknowledged import Acked
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
) -> list[Repair]:
    """The repairs that bring one partition from ``acked`` to ``desired`` (members that
    passed ``want``; ``None``: no table, see the module docstring). Adds first, in the
    table's order, then removes."""
    repairs: list[Repair] = []
    now_ms = int(time.time() * 1000)
    if desired is not None:
        for key, member in desired.items():
            entry = acked.get(key)
            if entry is None or entry.pending:
                repairs.append(
                    Repair(member.customer_id, member.audience, True, member.holdout,
                           member_delta(member))
                )  # fmt: skip
    for (audience, customer), entry in acked.items():
        if desired is not None:
            if (audience, customer) in desired:
                continue
        elif want.routed(audience) and want.includes(audience, customer):
            continue
        repairs.append(
            Repair(customer, audience, False, entry.holdout,
                   removal_delta(audience, customer, entry, now_ms), entry.identity)
        )  # fmt: skip
    return repairs
