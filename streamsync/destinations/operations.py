"""What an operator can do to a running destination, and what they can see of it: the
one implementation behind ``streamsync destinations ...`` and the console's forms.

Every change is a record of the destination's control topic
(:mod:`~streamsync.destinations.commands`), checked here first so a misspelt destination
or audience, or a percentage out of range, is one line and no record. :func:`status`
gathers, per audience, what the destination should hold (the membership table through
its filter, with the control topic's overrides) and what it confirmed (its acknowledged
topic), the group's lag on the deltas topic and what each running replica last reported.
"""

from __future__ import annotations

import contextlib
import difflib
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import Consumer, Message, TopicPartition
from pydantic import ValidationError

from streamsync.config import AppConfig
from streamsync.deltas.membership import decode_member, parse_member_key
from streamsync.destinations.acknowledged import acknowledged_topic, decode_acked
from streamsync.destinations.checks import defined_audiences
from streamsync.destinations.commands import ControlView, control_topic
from streamsync.destinations.config import DestinationConfig
from streamsync.destinations.control_topic import (
    READ_TIMEOUT_S,
    ControlFollower,
    ControlWriter,
    ensure_control_topic,
)
from streamsync.destinations.deliver import routed_audiences
from streamsync.destinations.desired import DesiredFilter
from streamsync.destinations.errors import DeliverSetupError
from streamsync.destinations.rollout import Cohort
from streamsync.kafka.config import consumer_config
from streamsync.kafka.health import QUIET_CLIENT
from streamsync.kafka.reader import TopicReader

Action = Literal["pause", "resume", "detach", "resync"]
#: How long reading a topic whole for ``status`` may take.
STATUS_TIMEOUT_S = 120.0


def destination(config: AppConfig, name: str) -> DestinationConfig:
    """The configured destination ``name``; :class:`DeliverSetupError` naming the closest."""
    if name in config.destinations:
        return config.destinations[name]
    close = difflib.get_close_matches(name, sorted(config.destinations), n=1)
    known = ", ".join(sorted(config.destinations)) or "none"
    hint = f"; did you mean {close[0]}?" if close else f" (configured: {known})"
    raise DeliverSetupError(f"no destination named {name!r}{hint}")


def check_audience(config: AppConfig, name: str, audience: str) -> None:
    """:class:`DeliverSetupError` unless ``audience`` is one destination ``name`` receives
    (or, when it receives every audience, one the definitions know, if any are named)."""
    routes = routed_audiences(name, destination(config, name), config.destinations)
    known = routes if routes is not None else defined_audiences(config)
    if known is None or audience in known:
        return
    close = difflib.get_close_matches(audience, sorted(known), n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise DeliverSetupError(f"destination {name!r} does not receive audience {audience!r}{hint}")


def _topic(config: AppConfig, name: str) -> str:
    return control_topic(destination(config, name).consumer_group(name))


def apply(
    config: AppConfig,
    name: str,
    action: Action,
    audience: str | None = None,
    *,
    by: str = "",
    timeout_s: float = READ_TIMEOUT_S,
) -> str:
    """Write ``action`` for destination ``name`` (``audience``: only that one); what was
    done, as one line."""
    topic = _topic(config, name)
    if audience is not None:
        check_audience(config, name, audience)
    ensure_control_topic(config, topic, timeout_s)
    writer = ControlWriter(config, topic, by=by)
    what = f"{name}" + (f" audience {audience}" if audience else "")
    try:
        if action == "pause":
            writer.write("pause", audience, {})
            return f"paused {what}"
        if action == "resume":
            writer.write("pause", audience, None)
            writer.write("detach", audience, None)
            return f"resumed {what}"
        if action == "detach":
            writer.write("detach", audience, {})
            return f"detached {what}: its values are removed from the profiles they are on"
        writer.write("resync", audience, {"id": uuid.uuid4().hex})
        return f"resync of {what} requested: the whole desired state is sent again"
    finally:
        writer.close()


def set_rollout(
    config: AppConfig,
    name: str,
    audience: str | None,
    percent: float | None,
    customers: list[str],
    *,
    by: str = "",
    timeout_s: float = READ_TIMEOUT_S,
) -> str:
    """Override the rollout of ``name`` (or of its ``audience``) with ``percent`` and the
    allowlist ``customers``; ``percent`` ``None``: back to the configuration's."""
    topic = _topic(config, name)
    if audience is not None:
        check_audience(config, name, audience)
    value: dict[str, Any] | None = None
    if percent is not None:
        try:
            cohort = Cohort(customers=frozenset(customers), percent=percent)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise DeliverSetupError(f"rollout: {first['msg']}") from None
        value = {"customers": sorted(cohort.customers), "percent": cohort.percent}
    ensure_control_topic(config, topic, timeout_s)
    writer = ControlWriter(config, topic, by=by)
    try:
        writer.write("rollout", audience, value)
    finally:
        writer.close()
    what = f"{name}" + (f" audience {audience}" if audience else "")
    if value is None:
        return f"rollout of {what}: back to the configuration"
    return f"rollout of {what}: {len(customers)} listed customers and {percent:g}%"


def read_view(
    config: AppConfig, name: str, *, timeout_s: float = READ_TIMEOUT_S, create: bool = True
) -> ControlView:
    """What the control topic of ``name`` says now (a topic not created yet says
    nothing); :class:`KafkaUnavailable` when Kafka does not answer within ``timeout_s``."""
    topic = _topic(config, name)
    if create:
        ensure_control_topic(config, topic)
    follower = ControlFollower(config, topic)
    try:
        return follower.start(timeout_s)
    finally:
        follower.close()


@dataclass
class DestinationStatus:
    """What ``streamsync destinations status`` prints for one destination."""

    name: str
    view: ControlView
    #: audience -> members the destination should hold (``None``: no membership table)
    desired: Counter[str] | None
    #: audience -> values it confirmed, and values sent without an answer on record
    acknowledged: Counter[str] = field(default_factory=Counter)
    pending: Counter[str] = field(default_factory=Counter)
    #: deltas after the group's committed offsets (``None``: it never committed)
    lag: int | None = None
    #: audiences named by the configuration or the control topic (shown with zeros too)
    named: set[str] = field(default_factory=set)

    @property
    def audiences(self) -> list[str]:
        found = set(self.desired or ()) | set(self.acknowledged) | set(self.pending)
        return sorted(found | self.named)

    @property
    def paused(self) -> str:
        view = self.view
        if view.paused:
            return "paused"
        if view.detached_all:
            return "detached"
        held = sorted(view.paused_audiences | view.detached)
        return "running" + (f" (held: {', '.join(held)})" if held else "")

    def replica_lines(self, now_ms: int) -> list[str]:
        """One line per replica that reported: its partitions, when, and its last error
        (a replica killed without stopping keeps its line, growing older)."""
        lines = []
        for replica, report in sorted(self.view.replicas.items()):
            age = max(0, now_ms - int(report.get("at_ms", now_ms))) // 1000
            parts = ",".join(map(str, report.get("partitions", []))) or "none"
            line = f"replica {replica}: partitions {parts}, reported {age}s ago"
            if report.get("dry_run"):
                line += " (dry run)"
            if report.get("last_error"):
                line += f", last error: {report['last_error']}"
            lines.append(line)
        return lines


def _read_whole(config: AppConfig, topic: str, handle: Any) -> bool:
    """Read every partition of ``topic`` to its end; False when it does not exist."""
    reader = TopicReader(config, time.monotonic() + STATUS_TIMEOUT_S, name="status")
    try:
        count = reader.topics().get(topic)
        if count is None:
            return False
        if reader.read([(topic, p) for p in range(count)], handle, lambda: None) is not None:
            raise DeliverSetupError(f"reading {topic} took over {STATUS_TIMEOUT_S:.0f}s")
        return True
    finally:
        reader.close()


def status(config: AppConfig, name: str) -> DestinationStatus:
    """Desired vs acknowledged per audience, lag, paused state and the replicas' reports."""
    dest = destination(config, name)
    view = read_view(config, name)
    routes = routed_audiences(name, dest, config.destinations)
    want = DesiredFilter(
        routes, dest.holdout, view.effective_rollout(dest.rollout), view.detached,
        view.detached_all,
    )  # fmt: skip
    latest: dict[tuple[str, str], bool] = {}

    def member(message: Message) -> bool:
        key, value = message.key(), message.value()
        if key is None:
            return False
        try:
            parsed = parse_member_key(key)
            latest[parsed] = value is not None and want.wants(decode_member(value))
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
        return False

    desired: Counter[str] | None = None
    if _read_whole(config, config.deltas.members, member):
        desired = Counter(audience for (audience, _), wanted in latest.items() if wanted)
    acked: dict[tuple[str, str], bool | None] = {}

    def entry(message: Message) -> bool:
        key, value = message.key(), message.value()
        if key is None:
            return False
        with contextlib.suppress(ValueError, KeyError, TypeError):
            acked[parse_member_key(key)] = None if value is None else decode_acked(value).pending
        return False

    group = dest.consumer_group(name)
    _read_whole(config, acknowledged_topic(group), entry)
    result = DestinationStatus(name, view, desired)
    for (audience, _), pending in acked.items():
        if pending is not None:
            (result.pending if pending else result.acknowledged)[audience] += 1
    result.lag = _lag(config, group)
    result.named = set(routes or ()) | view.detached | view.paused_audiences
    return result


def _lag(config: AppConfig, group: str) -> int | None:
    """Records of the deltas topic after ``group``'s committed offsets (not joining it)."""
    topic = config.deltas.topic
    consumer = Consumer(
        consumer_config(config.kafka.bootstrap_servers, group,
                        extra={**config.kafka.client_config(), **QUIET_CLIENT})
    )  # fmt: skip
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return None
        parts = [TopicPartition(topic, p) for p in metadata.partitions]
        committed = consumer.committed(parts, timeout=10)
        if all(p.offset < 0 for p in committed):
            return None
        lag = 0
        for position in committed:
            low, high = consumer.get_watermark_offsets(position, timeout=10)
            lag += max(0, high - (position.offset if position.offset >= 0 else low))
        return lag
    finally:
        consumer.close()
