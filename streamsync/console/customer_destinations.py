"""What each destination was told and acknowledged for one customer, next to what it
should hold.

Two halves, as delivery itself compares them (:mod:`streamsync.destinations.reconcile`):

* **acknowledged**: the destination's compacted ``<deliver group>.acknowledged`` topic
  (:mod:`streamsync.destinations.acknowledged`), of which only the customer's partition is
  read (it is partitioned like the deltas topic, by customer id), keeping the keys that end
  with their id. Each entry is *acknowledged* (the destination confirmed the value, under
  the identity it names), *pending* (an add was sent, its answer not on record) or absent
  (*not sent*, or removed and confirmed).
* **desired**: the customer's current memberships passed through the destination's
  :class:`~streamsync.destinations.desired.DesiredFilter` (routed audiences, detached ones
  from the control topic, holdout ``skip`` or ``marker``, the cohort and rollout), the one
  filter deliver applies, so the page's verdict is the comparison deliver will make.

The verdict per audience says what the next comparison does: nothing (in sync), send
(desired but not yet acknowledged) or detach (acknowledged but no longer desired).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from confluent_kafka import Message

from streamsync.config import AppConfig
from streamsync.deltas.membership import Member, member_partitioner, parse_member_key
from streamsync.destinations.acknowledged import Acked, acknowledged_topic, decode_acked
from streamsync.destinations.commands import ControlView
from streamsync.destinations.deliver import routed_audiences
from streamsync.destinations.desired import DesiredFilter
from streamsync.kafka.reader import TIMEOUT, TopicReader

AckState = Literal["acknowledged", "pending", "not sent"]
Verdict = Literal["in sync", "desired, not yet acknowledged", "no longer desired", "not desired"]


@dataclass
class CustomerAcknowledged:
    """What one destination's acknowledged topic holds for one customer."""

    destination: str
    topic: str
    #: audience -> the latest entry of the customer's key (tombstones dropped)
    entries: dict[str, Acked] = field(default_factory=dict)
    #: the partition read (``None`` when the topic does not exist)
    partition: int | None = None
    records_read: int = 0
    undecodable: int = 0
    exists: bool = True
    complete: bool = True


def read_customer_acknowledged(
    config: AppConfig, destination: str, customer: str, *, timeout_s: float = 60.0
) -> CustomerAcknowledged:
    """``customer``'s entries in ``destination``'s acknowledged topic: their one partition,
    read whole (``read_committed``, assign-only, nothing written). Raises
    :class:`~streamsync.kafka.health.KafkaUnavailable` when the cluster does not answer."""
    group = config.destinations[destination].consumer_group(destination)
    topic = acknowledged_topic(group)
    found = CustomerAcknowledged(destination, topic)
    reader = TopicReader(config, time.monotonic() + timeout_s, name="console-acknowledged")
    # Only the customer id ends a key as orjson writes it: a cheap test before parsing.
    suffix = b"," + orjson.dumps(customer) + b"]"
    latest: dict[str, Acked | None] = {}
    try:
        partitions = reader.topics().get(topic)
        if partitions is None:
            found.exists = False
            return found
        found.partition = member_partitioner(config, partitions)(customer.encode())

        def handle(message: Message) -> bool:
            found.records_read += 1
            key = message.key()
            if key is None or not key.endswith(suffix):
                return False
            value = message.value()
            try:
                audience, who = parse_member_key(key)
                if who != customer:
                    return False
                latest[audience] = None if value is None else decode_acked(value)
            except (ValueError, KeyError, TypeError):
                found.undecodable += 1
            return False

        done = reader.read([(topic, found.partition)], handle, lambda: None)
        found.complete = done != TIMEOUT
    finally:
        reader.close()
    found.entries = {a: e for a, e in sorted(latest.items()) if e is not None}
    return found


def desired_filter(config: AppConfig, destination: str, view: ControlView) -> DesiredFilter:
    """The filter deliver applies for ``destination`` under the control topic's ``view``
    (its detached audiences and rollout overrides), built as deliver builds it."""
    dest = config.destinations[destination]
    routes = routed_audiences(destination, dest)
    return DesiredFilter(
        routes, dest.holdout, view.effective_rollout(dest.rollout), view.detached,
        view.detached_all,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class AudienceAtDestination:
    """One audience of the customer at one destination: the row the page shows."""

    audience: str
    #: the customer is a member now (in the membership table)
    member: bool
    #: the membership is in the audience's holdout
    member_holdout: bool
    state: AckState
    #: what the destination calls the customer, as acknowledged ("" when nothing is)
    identity: str
    #: the acknowledged (or pending) value is the holdout marker
    acked_holdout: bool
    desired: bool
    #: why the destination's filter does not want it ("" when it does)
    why_not: str
    verdict: Verdict
    #: what the next comparison does, in words
    next_step: str


def _identity(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def why_not_desired(want: DesiredFilter, member: Member | None, audience: str) -> str:
    """Why ``want`` does not want the customer in ``audience`` ("" when it does)."""
    if member is None:
        return "not a member"
    if want.detached_all or audience in want.detached:
        return "detached (control topic)"
    if not want.routed(audience):
        return "not routed to this destination"
    if member.holdout and want.holdout == "skip":
        return "in the holdout (holdout: skip)"
    if not want.includes(audience, member.customer_id):
        return "outside the cohort / rollout"
    return ""


def compare(
    members: Iterable[Member], acked: CustomerAcknowledged, want: DesiredFilter
) -> list[AudienceAtDestination]:
    """Per audience the customer is a member of or has an entry for, the acknowledged
    state next to the desired one."""
    by_audience = {m.audience: m for m in members}
    rows = []
    for audience in sorted(set(by_audience) | set(acked.entries)):
        member = by_audience.get(audience)
        entry = acked.entries.get(audience)
        why = why_not_desired(want, member, audience)
        desired = not why
        state: AckState = (
            "not sent" if entry is None else "pending" if entry.pending else "acknowledged"
        )
        verdict: Verdict
        if desired:
            right_value = (
                entry is not None and member is not None and entry.holdout == member.holdout
            )
            if state == "acknowledged" and right_value:
                verdict, step = "in sync", "nothing to send"
            elif state == "acknowledged":
                verdict, step = "desired, not yet acknowledged", "the other value is sent"
            elif state == "pending":
                verdict, step = "desired, not yet acknowledged", "sent again until confirmed"
            else:
                verdict, step = "desired, not yet acknowledged", "sent"
        elif entry is not None:
            verdict, step = "no longer desired", "will be detached (removed from the profile)"
        else:
            verdict, step = "not desired", "nothing to send"
        rows.append(
            AudienceAtDestination(
                audience=audience,
                member=member is not None,
                member_holdout=bool(member and member.holdout),
                state=state,
                identity=_identity(entry.identity) if entry is not None else "",
                acked_holdout=bool(entry and entry.holdout),
                desired=desired,
                why_not=why,
                verdict=verdict,
                next_step=step,
            )
        )
    return rows
