"""What the pages read besides the store: the membership table, a customer's explain
and the admin ports of the running processes.

The Kafka reads are the project's own (:func:`~streamsync.deltas.membership.read_members`,
:func:`~streamsync.deltas.membership.read_customer_members` and
:func:`~streamsync.deltas.audit.audit_customer`, which ``streamsync explain`` prints), run
in a worker thread so a page that waits for the cluster does not hold up the others. They
sit behind :class:`Sources` so the pages can be tested without a broker.

A process's ``/metrics`` is parsed with prometheus_client's parser (the exposition
format's own reader) into the few numbers the pages show.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from streamsync.audiences.definition import Audience
from streamsync.audiences.diff import DiffReport
from streamsync.config import AppConfig
from streamsync.console.acknowledged_counts import AcknowledgedCounts, read_acknowledged
from streamsync.console.config import ProcessEndpoint
from streamsync.console.customer_destinations import (
    CustomerAcknowledged,
    desired_filter,
    read_customer_acknowledged,
)
from streamsync.console.dead_letters import DeadLetters, read_dead_letters
from streamsync.deltas.audit import CustomerAudit, audit_customer
from streamsync.deltas.membership import (
    MembershipTable,
    MembersTopicMissing,
    read_customer_members,
    read_members,
)
from streamsync.destinations import operations
from streamsync.destinations.commands import ControlView
from streamsync.destinations.desired import DesiredFilter
from streamsync.errors import StreamsyncError
from streamsync.runtime.snapshot import predict, read_snapshot

T = TypeVar("T")

#: How long an acknowledged count read from Kafka is shown before it is read again.
ACKNOWLEDGED_TTL_S = 30.0
#: How long the customer page waits for a destination's control topic.
CONTROL_READ_S = 2.0
#: How long one admin endpoint may take to answer.
PROBE_TIMEOUT_S = 3.0
#: Input records an explain from the console reads at most, as ``explain``'s default.
EXPLAIN_MAX_RECORDS = 10_000_000


class SourceError(Exception):
    """A read the page could not do (the cluster does not answer, a topic is missing);
    the message is one line for the page."""


class Sources(Protocol):
    async def members(self) -> MembershipTable: ...

    async def customer_members(self, customer: str) -> MembershipTable | None: ...

    async def audit(self, customer: str) -> CustomerAudit: ...

    async def acknowledged(self, destination: str) -> AcknowledgedCounts: ...

    async def customer_acknowledged(
        self, destination: str, customer: str
    ) -> CustomerAcknowledged: ...

    async def desired_filter(self, destination: str) -> tuple[DesiredFilter, str]: ...

    async def diff(self, current: list[Audience], new: list[Audience]) -> DiffReport: ...

    async def dead_letters(self) -> DeadLetters: ...


class KafkaSources:
    """:class:`Sources` on the cluster of ``config``."""

    def __init__(
        self,
        config: AppConfig,
        timeout_s: float,
        diff_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.clock = clock
        self.timeout_s = timeout_s
        self.diff_timeout_s = diff_timeout_s
        #: destination -> (when read, counts), see :meth:`acknowledged`
        self._acknowledged: dict[str, tuple[float, AcknowledgedCounts]] = {}

    async def members(self) -> MembershipTable:
        return await _in_thread(lambda: read_members(self.config, timeout_s=self.timeout_s))

    async def customer_members(self, customer: str) -> MembershipTable | None:
        def read() -> MembershipTable | None:
            try:
                return read_customer_members(self.config, customer, timeout_s=self.timeout_s)
            except MembersTopicMissing:
                return None

        return await _in_thread(read)

    async def audit(self, customer: str) -> CustomerAudit:
        return await _in_thread(
            lambda: audit_customer(
                self.config,
                customer,
                max_records=EXPLAIN_MAX_RECORDS,
                timeout_s=self.timeout_s,
            )
        )

    async def acknowledged(self, destination: str) -> AcknowledgedCounts:
        """The destination's counts, read at most once per :data:`ACKNOWLEDGED_TTL_S`: the
        topic is read whole (about one record per member), and an audience's page asks for
        every destination that receives it."""
        now = self.clock()
        cached = self._acknowledged.get(destination)
        if cached is not None and now - cached[0] < ACKNOWLEDGED_TTL_S:
            return cached[1]
        counts = await _in_thread(
            lambda: read_acknowledged(self.config, destination, timeout_s=self.timeout_s)
        )
        self._acknowledged[destination] = (now, counts)
        return counts

    async def customer_acknowledged(self, destination: str, customer: str) -> CustomerAcknowledged:
        """``customer``'s entries in the destination's acknowledged topic: one partition,
        read each time (not cached: the page is asked for to see what is true now)."""
        return await _in_thread(
            lambda: read_customer_acknowledged(
                self.config, destination, customer, timeout_s=self.timeout_s
            )
        )

    async def desired_filter(self, destination: str) -> tuple[DesiredFilter, str]:
        """The destination's filter under its control topic, and a note ("" when the
        control topic was read; else why the configured filter alone is shown)."""
        try:
            view = await _in_thread(
                lambda: operations.read_view(
                    self.config, destination, timeout_s=CONTROL_READ_S, create=False
                )
            )
            note = ""
        except SourceError as exc:
            view = ControlView()
            note = f"control topic not read ({exc}): "
            note += "detached audiences and rollout overrides are not applied"
        return desired_filter(self.config, destination, view), note

    async def diff(self, current: list[Audience], new: list[Audience]) -> DiffReport:
        """``streamsync audiences diff`` on the cluster: the membership table, the
        changelog's clocks and the input topics read (nothing written), in a thread."""

        def work() -> DiffReport:
            settings = self.config.evaluate
            if settings is None:
                raise StreamsyncError("the configuration has no evaluate section")
            snapshot = read_snapshot(self.config, timeout_s=self.diff_timeout_s)
            lateness = settings.allowed_lateness_ms
            return predict(snapshot, current, new, allowed_lateness_ms=lateness)

        return await _in_thread(work)

    async def dead_letters(self) -> DeadLetters:
        return await _in_thread(lambda: read_dead_letters(self.config, timeout_s=self.timeout_s))


async def _in_thread(work: Callable[[], T]) -> T:
    try:
        return await asyncio.to_thread(work)
    except StreamsyncError as exc:
        raise SourceError(" ".join(str(exc).split())) from None


# The admin ports.


@dataclass
class ProcessReport:
    """One process as its admin port answered."""

    endpoint: ProcessEndpoint
    alive: bool | None = None
    alive_reason: str = ""
    ready: bool | None = None
    ready_reason: str = ""
    error: str | None = None
    #: topic -> records behind (summed over partitions and groups)
    lag: dict[str, float] = field(default_factory=dict)
    #: (restored, target) records of the state stores, while restoring
    restore: tuple[float, float] | None = None
    dead_lettered: float = 0.0
    #: per destination: what deliver counted
    destinations: dict[str, DestinationNumbers] = field(default_factory=dict)

    @property
    def reachable(self) -> bool:
        return self.error is None


@dataclass
class DestinationNumbers:
    requests: float = 0.0
    throttled: float = 0.0
    retries: float = 0.0
    delivered: float = 0.0
    rejected: dict[str, float] = field(default_factory=dict)
    matched: float = 0.0
    unmatched: float = 0.0
    #: audience -> state (desired, acknowledged, pending) -> values, over the replicas
    members: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def match_rate(self) -> float | None:
        total = self.matched + self.unmatched
        return None if total == 0 else self.matched / total


async def probe(session: aiohttp.ClientSession, endpoint: ProcessEndpoint) -> ProcessReport:
    """``/healthz``, ``/readyz`` and ``/metrics`` of one process; an unreachable one is
    a report with ``error`` set, never an exception."""
    report = ProcessReport(endpoint)
    base = endpoint.url.rstrip("/")
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
    try:
        async with session.get(f"{base}/healthz", timeout=timeout) as response:
            report.alive = response.status == 200
            report.alive_reason = (await response.text())[:500].strip()
        async with session.get(f"{base}/readyz", timeout=timeout) as response:
            report.ready = response.status == 200
            report.ready_reason = (await response.text())[:500].strip()
        async with session.get(f"{base}/metrics", timeout=timeout) as response:
            if response.status == 200:
                read_metrics(report, await response.text())
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        report.error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]
    return report


def read_metrics(report: ProcessReport, text: str) -> None:
    lag: dict[str, float] = defaultdict(float)
    restored = target = 0.0
    seen_restore = False
    dest: dict[str, DestinationNumbers] = defaultdict(DestinationNumbers)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "streamsync_consumer_lag":
                lag[labels.get("topic", "?")] += value
            elif name == "streamsync_state_restored_records":
                restored += value
                seen_restore = True
            elif name == "streamsync_state_restore_target_records":
                target += value
                seen_restore = True
            elif name == "streamsync_records_dead_lettered_total":
                report.dead_lettered += value
            elif name.startswith("streamsync_destination_") or name.startswith(
                "streamsync_identifier_lookups"
            ):
                _destination_sample(dest, name, labels, value)
    report.lag = dict(lag)
    report.restore = (restored, target) if seen_restore else None
    report.destinations = dict(dest)


def _destination_sample(
    dest: dict[str, DestinationNumbers], name: str, labels: dict[str, str], value: float
) -> None:
    numbers = dest[labels.get("destination", "?")]
    if name == "streamsync_destination_requests_total":
        numbers.requests += value
    elif name == "streamsync_destination_throttled_total":
        numbers.throttled += value
    elif name == "streamsync_destination_retries_total":
        numbers.retries += value
    elif name == "streamsync_destination_delivered_total":
        numbers.delivered += value
    elif name == "streamsync_destination_rejected_total":
        reason = labels.get("reason", "?")
        numbers.rejected[reason] = numbers.rejected.get(reason, 0.0) + value
    elif name == "streamsync_destination_members":
        states = numbers.members.setdefault(labels.get("audience", "?"), {})
        state = labels.get("state", "?")
        states[state] = states.get(state, 0.0) + value
    elif name == "streamsync_identifier_lookups_total":
        if labels.get("result") == "matched":
            numbers.matched += value
        else:
            numbers.unmatched += value


async def probe_all(endpoints: list[ProcessEndpoint]) -> list[ProcessReport]:
    if not endpoints:
        return []
    async with aiohttp.ClientSession() as session:
        return list(await asyncio.gather(*(probe(session, e) for e in endpoints)))
