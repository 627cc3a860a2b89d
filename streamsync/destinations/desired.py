"""What one destination should hold: the desired half of reconciliation.

The desired state of a destination is the current membership (the compacted membership
table, :mod:`streamsync.deltas.membership`) passed through the destination's
:class:`DesiredFilter`. The filter is the one place that decides whether a member belongs
on the destination, so the snapshot read at assignment and the real-time deltas agree;
the test cohort and percentage rollout (:mod:`~streamsync.destinations.rollout`) and the
audiences detached by the control topic are further conditions of the same filter.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import Message

from streamsync.config import AppConfig
from streamsync.deltas.membership import Member, MemberKey, decode_member, parse_member_key
from streamsync.destinations.rollout import EVERYONE, Rollout
from streamsync.kafka.health import KafkaUnavailable
from streamsync.kafka.reader import TopicReader

#: How long reading one assignment's partitions of the table may take.
READ_TIMEOUT_S = 300.0


class DesiredFilter:
    """Which members a destination should have: the routed audiences (``None``: every
    audience) not detached, holdout members only when they are delivered as a marker, and
    only customers the rollout includes."""

    def __init__(
        self,
        routes: frozenset[str] | None,
        holdout: str,
        rollout: Rollout = EVERYONE,
        detached: frozenset[str] = frozenset(),
        detached_all: bool = False,
    ) -> None:
        self.routes = routes
        self.holdout = holdout
        self.rollout = rollout
        self.detached = detached
        self.detached_all = detached_all

    def routed(self, audience: str) -> bool:
        """Whether ``audience`` belongs on the destination at all (values of an audience
        that is not are detached)."""
        if self.detached_all or audience in self.detached:
            return False
        return self.routes is None or audience in self.routes

    def includes(self, audience: str, customer_id: str) -> bool:
        """Whether the rollout includes ``customer_id`` in ``audience``."""
        return self.rollout.includes(audience, customer_id)

    def wants(self, member: Member) -> bool:
        if not self.routed(member.audience):
            return False
        if member.holdout and self.holdout == "skip":
            return False
        return self.includes(member.audience, member.customer_id)


@dataclass
class DesiredSnapshot:
    """The table's partitions as read at one moment, filtered: partition -> members."""

    partitions: dict[int, dict[MemberKey, Member]] = field(default_factory=dict)
    records_read: int = 0
    undecodable: int = 0

    def members(self) -> int:
        return sum(len(m) for m in self.partitions.values())


def table_partitions(config: AppConfig) -> int | None:
    """The membership table's partition count, or ``None`` when it does not exist (no
    evaluate has run with this configuration yet)."""
    reader = TopicReader(config, time.monotonic() + 30.0, name="members")
    try:
        return reader.topics().get(config.deltas.members)
    finally:
        reader.close()


def read_desired(
    config: AppConfig, partitions: Iterable[int], want: DesiredFilter
) -> DesiredSnapshot:
    """The desired members of ``partitions`` of the table, each read from its oldest
    record to its end as of now (``read_committed``: exactly what committed deltas say).
    :class:`KafkaUnavailable` when that takes over :data:`READ_TIMEOUT_S`."""
    wanted = sorted(partitions)
    snapshot = DesiredSnapshot({p: {} for p in wanted})
    topic = config.deltas.members
    deadline = time.monotonic() + READ_TIMEOUT_S
    reader = TopicReader(config, deadline, name="members")
    store = snapshot.partitions

    def handle(message: Message) -> bool:
        snapshot.records_read += 1
        key, value, partition = message.key(), message.value(), message.partition()
        if key is None or partition is None:
            return False
        try:
            parsed = parse_member_key(key)
            members = store[partition]
            if value is None:
                members.pop(parsed, None)
                return False
            member = decode_member(value)
        except (ValueError, KeyError, TypeError, AttributeError):
            snapshot.undecodable += 1
            return False
        if want.wants(member):
            members[parsed] = member
        else:  # a later record of the key replaces an earlier wanted one
            members.pop(parsed, None)
        return False

    try:
        while reader.read([(topic, p) for p in wanted], handle, lambda: None) is not None:
            if time.monotonic() >= deadline:  # else a partition without a leader yet
                raise KafkaUnavailable(f"reading {topic} took over {READ_TIMEOUT_S:.0f}s")
            snapshot.partitions = store = {p: {} for p in wanted}
            time.sleep(0.2)
    finally:
        reader.close()
    return snapshot
