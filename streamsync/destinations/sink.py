"""The delivery sink: one place for batching, ordering, limits, retries and acks.

Like a quix-streams sink, the caller :meth:`DeliverySink.add`\\ s changes as they are
consumed and calls :meth:`DeliverySink.pump` often (:meth:`DeliverySink.flush` before
shutting down); :attr:`DeliverySink.backpressure` tells it to pause the consumer. Unlike
a callback-per-record design, the sink never blocks: every wait (linger, rate limit, retry
backoff, a 429's reset) is a time it reports through :meth:`next_wakeup`, so the consumer
keeps polling (and keeps its group membership) while the destination is down.

Guarantees, and how:

* *Per-customer order.* One batch is in flight at a time; a batch is acknowledged only
  when every request in it was. Changes added meanwhile wait in the buffer, so an exit
  can never overtake the enter before it. Within a batch, up to ``max_in_flight``
  requests are sent at once, in order and only while they name distinct customers: a
  request sharing a customer with one before it waits for that one's answer.
* *Net effect.* In the buffer, a customer+audience has at most one change: a later delta
  replaces the earlier one's direction and inherits its offsets.
* *Only the difference.* Just before a batch is sent, each change is compared with what
  the destination acknowledged (:class:`~streamsync.destinations.acknowledged.AcknowledgedState`):
  an add already confirmed is not sent again, a remove of a value the destination never
  acknowledged for that profile is never sent, and a remove goes to the identity the
  value was acknowledged under. Each answer is recorded there.
* *Moves.* An add of a value confirmed under another identity (the member's identifier
  for this destination changed) or another value name (holdout marker or not) is sent as
  a remove from the acknowledged profile, then, once that is acknowledged, the add. Remove
  first, because the record names one profile: it always names every profile that may
  hold the value, so nothing is left behind by a crash in between (the add is then
  backfilled, or re-read with its uncommitted delta).
* *Reconciliation.* :meth:`DeliverySink.reconcile` takes the repairs of an assignment
  (:mod:`~streamsync.destinations.reconcile`: backfill and detach) into a backlog that
  feeds the buffer up to half its size, so real-time deltas keep flowing meanwhile; a
  delta for the same customer and audience replaces its repair (it is newer).
* *Nothing lost.* A change's offsets are released (:class:`OffsetTracker`) only when the
  destination acknowledged it, or it was dead-lettered with the reason.
* *Limits.* :class:`~streamsync.destinations.limiter.TokenBucket` before each request;
  a 429 blocks the bucket until the reset its headers name.
* *Retries.* Retriable failures resend the same request after jittered exponential
  backoff, with no limit on attempts; the consumer is paused meanwhile.
* *Bad records.* A refused whole request is split in halves until the refused change is
  alone, then dead-lettered; per-record errors in a 2xx response are dead-lettered too.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from streamsync.dead_letter import ATTRIBUTE_REJECTED, REJECTED, UNMATCHED
from streamsync.deltas.record import MembershipDelta
from streamsync.destinations.acknowledged import Acked, AcknowledgedState, holds
from streamsync.destinations.client import Change, DestinationClient, Request, Response
from streamsync.destinations.config import Retry
from streamsync.destinations.dead_letter import DeliveryDeadLetters
from streamsync.destinations.desired import DesiredFilter
from streamsync.destinations.errors import (
    BatchRejected,
    DeliveryError,
    FatalDestinationError,
    RateLimited,
    Rejection,
    RetriableError,
)
from streamsync.destinations.limiter import TokenBucket
from streamsync.destinations.offsets import OffsetTracker
from streamsync.destinations.reconcile import Repair, removal_delta

if TYPE_CHECKING:
    from streamsync.destinations.tracing import RequestTracer
    from streamsync.observability.tracing import ReceivedHeaders

log = logging.getLogger("streamsync.deliver")


def _offsets(change: Change) -> list[int]:
    """The delta offsets a buffered change holds, its move's add's included."""
    return change.offsets + change.then.offsets if change.then is not None else change.offsets


class Transport(Protocol):
    """What the sink sends through (:class:`~streamsync.destinations.transport.HttpTransport`)."""

    def send(self, request: Request) -> Response: ...

    def close(self) -> None: ...


class DeliveryObserver(Protocol):
    """Where the sink reports as it works, for metrics. The method names are those of
    :class:`streamsync.observability.metrics.Telemetry`, so a process hands its telemetry
    in as is; the sink itself depends on no metrics library."""

    def destination_request(self, destination: str, status: int | None) -> None: ...

    def destination_retry(self, destination: str, reason: str) -> None: ...

    def deltas_delivered(self, destination: str, count: int = 1) -> None: ...

    def deltas_rejected(self, destination: str, reason: str, count: int = 1) -> None: ...

    def identifier_lookup(
        self, destination: str, audience: str, matched: bool, count: int = 1
    ) -> None: ...

    def observe_delta_to_destination(self, destination: str, seconds: float) -> None: ...

    def set_destination_members(
        self, destination: str, audience: str, state: str, count: int
    ) -> None: ...

    def deltas_excluded(self, destination: str, audience: str, count: int = 1) -> None: ...


@dataclass
class SinkStats:
    """Counters a metrics exporter can read; plain fields, updated in place."""

    delivered: Counter[tuple[str, str]] = field(default_factory=Counter)  # (audience, op)
    matched: Counter[str] = field(default_factory=Counter)
    unmatched: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    holdout_skipped: Counter[str] = field(default_factory=Counter)
    #: ride-along values left out of a delivered change, by attribute (dead-lettered)
    attribute_rejected: Counter[str] = field(default_factory=Counter)
    collapsed: int = 0
    requests: int = 0
    objects: int = 0
    batches: int = 0
    rate_limited: int = 0
    retries: int = 0
    splits: int = 0
    dry_run_requests: int = 0
    #: changes a dry run would have delivered (logged, never sent: not ``delivered``)
    would_deliver: int = 0
    #: unacknowledged changes handed back to Kafka when partitions were revoked
    revoked: int = 0
    #: changes not sent because the destination already holds that state (an add
    #: confirmed before, a remove of a value never acknowledged)
    unchanged: int = 0
    #: repairs of assignments, per audience: adds (backfill) and removes (detach)
    backfilled: Counter[str] = field(default_factory=Counter)
    detached: Counter[str] = field(default_factory=Counter)
    #: enters of customers the rollout leaves out, per audience (not sent, or sent as
    #: the remove of a value acknowledged before the rollout shrank)
    excluded: Counter[str] = field(default_factory=Counter)
    #: values moved, per audience: removed from the profile (or value name) they were
    #: acknowledged under, then added under the member's current one
    moved: Counter[str] = field(default_factory=Counter)

    @property
    def delivered_total(self) -> int:
        return sum(self.delivered.values())

    def match_rate(self, audience: str) -> float:
        seen = self.matched[audience] + self.unmatched[audience]
        return self.matched[audience] / seen if seen else 1.0

    def as_dict(self) -> dict[str, object]:
        return {
            "delivered": self.delivered_total,
            "requests": self.requests,
            "objects": self.objects,
            "batches": self.batches,
            "rejected": sum(self.rejected.values()),
            "unmatched": sum(self.unmatched.values()),
            "holdout_skipped": sum(self.holdout_skipped.values()),
            "attribute_rejected": sum(self.attribute_rejected.values()),
            "rate_limited": self.rate_limited,
            "retries": self.retries,
            "splits": self.splits,
            "revoked": self.revoked,
            "unchanged": self.unchanged,
            "backfilled": sum(self.backfilled.values()),
            "detached": sum(self.detached.values()),
            "excluded": sum(self.excluded.values()),
            "moved": sum(self.moved.values()),
            # A dry run sends nothing: what it would have sent, apart from "delivered".
            **(
                {"would_deliver": self.would_deliver, "dry_run_requests": self.dry_run_requests}
                if self.dry_run_requests
                else {}
            ),
        }


@dataclass(slots=True)
class _Sent:
    """A request the destination answered, and the changes its answer refused."""

    response: Response
    rejected: list[tuple[Change, Rejection]]


@dataclass(slots=True)
class _Failed:
    """A request that failed, with the HTTP status of its answer if there was one."""

    error: DeliveryError
    status: int | None


@dataclass
class _Batch:
    changes: list[Change]
    requests: list[Request]
    index: int = 0
    attempt: int = 0
    not_before: float = 0.0  # monotonic
    rejected: list[tuple[Change, Rejection]] = field(default_factory=list)


class DeliverySink:
    def __init__(
        self,
        client: DestinationClient,
        transport: Transport,
        dead_letters: DeliveryDeadLetters,
        offsets: OffsetTracker,
        *,
        retry: Retry,
        linger_s: float,
        max_buffered: int,
        holdout: str = "skip",
        dry_run: bool = False,
        on_ack: Callable[[list[Change], float], None] | None = None,
        observer: DeliveryObserver | None = None,
        tracer: RequestTracer | None = None,
        acknowledged: AcknowledgedState | None = None,
        want: DesiredFilter | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        max_in_flight: int = 1,
    ) -> None:
        self.client = client
        #: requests sent at once, to distinct customers (``batching.max_in_flight``); the
        #: transport must then be safe to call from that many threads at once
        self.max_in_flight = max(1, max_in_flight)
        #: the threads requests sent together wait in (created as first needed)
        self._pool = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="deliver-send")
        #: what the destination confirmed (in memory only unless given one with a topic)
        self.acknowledged = acknowledged if acknowledged is not None else AcknowledgedState()
        self.transport = transport
        self.dead_letters = dead_letters
        self.offsets = offsets
        self.retry = retry
        self.linger_s = linger_s
        self.max_buffered = max_buffered
        self.holdout = holdout
        #: which changes belong on the destination (the rollout, detached audiences):
        #: applied when a change is added and again when it is sent, so a change buffered
        #: before the filter changed is not sent against it
        self.want = want if want is not None else DesiredFilter(None, holdout)
        self.dry_run = dry_run
        self.on_ack = on_ack
        self.observer = observer
        #: records a span per request when spans are exported (``None`` otherwise)
        self.tracer = tracer if tracer is not None and tracer.enabled else None
        self.limiter = TokenBucket(client.rate_limit, clock=clock, wall=wall)
        self.stats = SinkStats()
        self.paused = False
        self.paused_audiences: frozenset[str] = frozenset()
        #: the latest failure the destination answered with ("": none since start)
        self.last_error = ""
        self._clock = clock
        self._buffer: dict[tuple[str, str], Change] = {}
        #: repairs waiting for room in the buffer, by (customer, audience)
        #: repairs waiting for room, oldest first. An OrderedDict, not a dict: taking the
        #: oldest of a dict (``next(iter(d))``) after popping from its front scans the
        #: freed slots, which made a backfill of 1M members quadratic.
        self._backlog: OrderedDict[tuple[str, str], tuple[int, Repair]] = OrderedDict()
        self._inflight: _Batch | None = None
        self._random = random.Random()

    # -- input -------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        return len(self._buffer) + (len(self._inflight.changes) if self._inflight else 0)

    @property
    def failing(self) -> bool:
        """The in-flight batch is waiting to retry: the destination is down or limiting."""
        return self._inflight is not None and self._inflight.attempt > 0

    @property
    def backpressure(self) -> bool:
        """Pause the consumer: buffer full, or the destination is failing."""
        return self.failing or len(self._buffer) >= self.max_buffered

    @property
    def idle(self) -> bool:
        return self._inflight is None and not self._buffer and not self._backlog

    @property
    def backlog(self) -> int:
        """Repairs not yet in the buffer."""
        return len(self._backlog)

    @property
    def sending(self) -> bool:
        """A batch is in flight (its answer will change the acknowledged state)."""
        return self._inflight is not None

    def forget_repairs(self) -> None:
        """Drop the repairs not sent yet (backlog and buffer), before a new comparison
        replaces them: one planned under the previous filter may be wrong now."""
        self._backlog.clear()
        self._buffer = {
            k: c for k, c in self._buffer.items() if not (c.reconciled and not _offsets(c))
        }

    def reconcile(self, partition: int, repairs: list[Repair]) -> None:
        """Take the repairs of ``partition`` (just assigned) to send as room allows."""
        backlog = self._backlog
        for repair in repairs:
            key = (repair.customer_id, repair.audience)
            if key not in self._buffer:
                backlog[key] = (partition, repair)

    def _refill(self) -> None:
        """Move repairs into the buffer up to half its size (room left for deltas)."""
        backlog = self._backlog
        if not backlog:
            return
        room = self.max_buffered // 2 - len(self._buffer)
        while room > 0 and backlog:
            key, (partition, repair) = backlog.popitem(last=False)
            room -= 1
            if repair.enter:
                identity = self.client.identify(repair.delta)
                if identity is None:
                    self.stats.unmatched[repair.audience] += 1
                    continue
                self.stats.backfilled[repair.audience] += 1
            else:
                identity = repair.identity
                self.stats.detached[repair.audience] += 1
            self._buffer[key] = Change(
                repair.customer_id, repair.audience, repair.enter, repair.holdout, identity,
                repair.delta, partition, [], self._clock(), None, None, True,
            )  # fmt: skip

    def _excluded(self, audience: str) -> None:
        self.stats.excluded[audience] += 1
        if self.observer is not None:
            self.observer.deltas_excluded(self.client.name, audience)

    def report_sizes(self, desired: Mapping[str, int]) -> None:
        """Tell the observer each audience's desired (``desired``, as of the last
        comparison), acknowledged and pending counts on the partitions owned here."""
        if self.observer is None:
            return
        confirmed, pending = self.acknowledged.counts()
        name = self.client.name
        for audience in set(desired) | set(confirmed) | set(pending):
            self.observer.set_destination_members(name, audience, "desired",
                                                  desired.get(audience, 0))  # fmt: skip
            self.observer.set_destination_members(name, audience, "acknowledged",
                                                  confirmed[audience])  # fmt: skip
            self.observer.set_destination_members(name, audience, "pending", pending[audience])

    def _belongs(self, audience: str, customer_id: str) -> bool:
        want = self.want
        return want.routed(audience) and want.includes(audience, customer_id)

    def settled_already(self, change: Change) -> bool:
        """Whether the destination already holds what ``change`` would write: an add
        confirmed before, or a remove of a value never acknowledged for this profile. A
        remove that is sent is pointed at the value and identity that were acknowledged."""
        if change.then is not None:  # a move decided against an earlier state: again
            self._unmove(change)
        entry = self.acknowledged.get(change.partition, change.audience, change.customer_id)
        if change.enter and not self._belongs(change.audience, change.customer_id):
            self._excluded(change.audience)
            change.enter = False  # it must not be there: a remove, if it ever was
            change.delta = removal_delta(
                change.audience, change.customer_id, entry or Acked(None, change.holdout),
                int(time.time() * 1000),
            )  # fmt: skip
        if change.enter:
            if entry is None or entry.pending:
                return False
            if holds(entry, change.identity, change.holdout):
                return True
            self._move(change, entry)
            return False
        if entry is None:
            return True
        change.identity = entry.identity
        change.holdout = entry.holdout
        return False

    def _move(self, change: Change, entry: Acked) -> None:
        """Turn the add ``change`` of a value confirmed as ``entry`` (another identity or
        value name) into the remove of ``entry``, the add to follow once it is
        acknowledged (see the module docstring). A move is no entry: the add fires no
        "entered" event."""
        change.then = Change(
            change.customer_id, change.audience, True, change.holdout, change.identity,
            change.delta, change.partition, change.offsets, change.added_at,
            change.committed_ms, change.traces, True,
        )  # fmt: skip
        change.enter = False
        change.identity = entry.identity
        change.holdout = entry.holdout
        change.delta = removal_delta(change.audience, change.customer_id, entry,
                                     int(time.time() * 1000))  # fmt: skip
        change.offsets = []
        change.committed_ms = None
        change.traces = None
        change.reconciled = True

    @staticmethod
    def _unmove(change: Change) -> None:
        """Make the remove half of a move the add it was again (with every offset), to
        be compared anew: the acknowledged state may have changed since, or a newer
        delta replaces it."""
        add = change.then
        assert add is not None
        change.then = None
        change.enter = True
        change.identity = add.identity
        change.holdout = add.holdout
        change.delta = add.delta
        change.offsets = add.offsets + change.offsets
        change.committed_ms = add.committed_ms
        change.traces = add.traces

    def add(
        self,
        delta: MembershipDelta,
        partition: int,
        offset: int,
        committed_ms: int | None = None,
        headers: ReceivedHeaders | None = None,
    ) -> None:
        """Take one consumed delta (already routed to this destination). The offset is
        registered with the tracker and released when the change is settled;
        ``committed_ms`` (the record's Kafka timestamp) times commit-to-acknowledgement;
        ``headers`` (the record's, passed only when :attr:`tracer` is set) are kept for the
        request span to link to the delta's trace."""
        self.offsets.track(partition, offset)
        if self._backlog:  # this delta is newer than the table record behind a repair
            self._backlog.pop((delta.customer_id, delta.audience), None)
        key = (delta.customer_id, delta.audience)
        existing = self._buffer.get(key)
        if delta.holdout and self.holdout == "skip":
            self.stats.holdout_skipped[delta.audience] += 1
            acked = self.acknowledged.get(partition, delta.audience, delta.customer_id)
            if acked is None and existing is None:
                self.offsets.done(partition, [offset])
                return
            # A value acknowledged before the member was a holdout, or before holdouts
            # were skipped, must not stay: a remove of exactly that value.
            delta = removal_delta(delta.audience, delta.customer_id,
                                  acked or Acked(None, False), delta.at_ms)  # fmt: skip
        if delta.op == "enter" and not self._belongs(delta.audience, delta.customer_id):
            self._excluded(delta.audience)
            acked = self.acknowledged.get(partition, delta.audience, delta.customer_id)
            if acked is None and existing is None:  # never there: nothing to send
                self.offsets.done(partition, [offset])
                return
            delta = removal_delta(delta.audience, delta.customer_id,
                                  acked or Acked(None, delta.holdout), delta.at_ms)  # fmt: skip
        identity = self.client.identify(delta)
        if identity is None and existing is not None:
            # The same customer, just without the identifier on this delta: the change it
            # replaces must not reach the destination alone.
            identity = existing.identity
        if identity is None and delta.op == "exit":
            # A remove goes to the profile the value was acknowledged on anyway.
            acked = self.acknowledged.get(partition, delta.audience, delta.customer_id)
            if acked is not None:
                identity = acked.identity
        if self.observer is not None:
            self.observer.identifier_lookup(self.client.name, delta.audience, identity is not None)
        if identity is None:
            self.stats.unmatched[delta.audience] += 1
            if self.observer is not None:
                self.observer.deltas_rejected(self.client.name, UNMATCHED)
            self.dead_letters.delta(
                delta, partition, offset, reason=UNMATCHED, destination=self.client.name,
                rejection=Rejection(0, "no identifier this destination is configured to use"),
            )  # fmt: skip
            self.offsets.done(partition, [offset])
            return
        self.stats.matched[delta.audience] += 1
        problem = self.client.check(delta)
        if problem is not None:
            self.stats.rejected[delta.audience] += 1
            if self.observer is not None:
                self.observer.deltas_rejected(self.client.name, REJECTED)
            self.dead_letters.delta(
                delta, partition, offset, reason=REJECTED, destination=self.client.name,
                rejection=Rejection(0, problem),
            )  # fmt: skip
            self.offsets.done(partition, [offset])
            return
        for attribute, reason in self.client.attribute_failures(delta):
            self._attribute_rejected(delta, partition, offset, attribute, reason)
        if existing is not None:
            self.stats.collapsed += 1
            if existing.then is not None:  # a move not sent yet: this delta replaces it
                self._unmove(existing)
            existing.enter = delta.op == "enter"
            existing.delta = delta
            existing.identity = identity
            existing.holdout = delta.holdout
            existing.offsets.append(offset)
            existing.committed_ms = committed_ms
            if headers:
                if existing.traces is None:
                    existing.traces = [headers]
                else:
                    existing.traces.append(headers)
            return
        self._buffer[key] = Change(
            delta.customer_id, delta.audience, delta.op == "enter", delta.holdout, identity,
            delta, partition, [offset], self._clock(), committed_ms,
            [headers] if headers else None,
        )  # fmt: skip

    def _attribute_rejected(
        self, delta: MembershipDelta, partition: int, offset: int, attribute: str, reason: str
    ) -> None:
        """A ride-along value that cannot be written: counted and dead-lettered on its own,
        while the membership change it came with is delivered without it."""
        self.stats.attribute_rejected[attribute] += 1
        if self.observer is not None:
            self.observer.deltas_rejected(self.client.name, ATTRIBUTE_REJECTED)
        self.dead_letters.delta(
            delta, partition, offset, reason=ATTRIBUTE_REJECTED, destination=self.client.name,
            rejection=Rejection(0, f"attribute {attribute!r} left out: {reason}"),
        )  # fmt: skip

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forget unacknowledged changes of partitions this consumer no longer owns (their
        new owner re-reads them from the committed offsets; writes are idempotent)."""
        before = self.buffered
        self._buffer = {k: c for k, c in self._buffer.items() if c.partition not in partitions}
        self._backlog = OrderedDict(
            (k, r) for k, r in self._backlog.items() if r[0] not in partitions
        )
        batch = self._inflight
        if batch is not None and any(c.partition in partitions for c in batch.changes):
            keep = [c for c in batch.changes if c.partition not in partitions]
            self._inflight = _Batch(keep, self.client.plan(keep)) if keep else None
        self.stats.revoked += before - self.buffered

    # -- output ------------------------------------------------------------------------

    def _sendable(self, change: Change) -> bool:
        return change.audience not in self.paused_audiences

    def _take_batch(self, now: float, force: bool) -> list[Change] | None:
        if self.paused:
            return None
        self._refill()
        if not self._buffer:
            return None
        # room for one full request per request in flight
        limit = self.client.max_customers_per_batch * self.max_in_flight
        customers: set[str] = set()
        chosen: list[tuple[str, str]] = []
        oldest: float | None = None
        unchanged: list[tuple[str, str]] = []
        for key, change in self._buffer.items():
            if not self._sendable(change):
                continue
            if self.settled_already(change):
                unchanged.append(key)
                continue
            if change.customer_id not in customers:
                if len(customers) == limit:
                    break
                customers.add(change.customer_id)
            if oldest is None:
                oldest = change.added_at
            chosen.append(key)
        for key in unchanged:
            change = self._buffer.pop(key)
            self.stats.unchanged += 1
            self.offsets.done(change.partition, change.offsets)
        if not chosen or oldest is None:
            return None
        full = len(customers) >= limit
        if not (full or force or now - oldest >= self.linger_s):
            return None
        changes = [self._buffer.pop(key) for key in chosen]
        if not self.dry_run:
            self.acknowledged.begin(changes)
        return changes

    def next_wakeup(self, now: float) -> float:
        """Seconds until :meth:`pump` has something to do (capped by the caller)."""
        batch = self._inflight
        if batch is not None:
            wait = max(0.0, batch.not_before - now)
            if batch.index < len(batch.requests):
                wait = max(wait, self.limiter.wait_s(batch.requests[batch.index].cost))
            return wait
        if self.paused or not (self._buffer or self._backlog):
            return 1.0
        if not self._buffer:
            return 0.0
        first = next((c for c in self._buffer.values() if self._sendable(c)), None)
        if first is None:
            return 1.0
        return max(0.0, first.added_at + self.linger_s - now)

    def pump(self, budget_s: float = 0.05, force: bool = False) -> None:
        """Send whatever may be sent now, for at most about ``budget_s`` seconds.
        ``force`` ignores the linger (used when draining before shutdown)."""
        deadline = self._clock() + budget_s
        while True:
            now = self._clock()
            if self._inflight is None:
                changes = self._take_batch(now, force)
                if changes is None:
                    return
                self._inflight = _Batch(changes, self.client.plan(changes))
                self.stats.batches += 1
            if not self._step(now) or self._clock() >= deadline:
                return

    def flush(self, timeout_s: float) -> bool:
        """Send everything buffered now (no linger), waiting as the limits require, for at
        most ``timeout_s``; True when nothing is left. Held (paused) changes stay."""
        deadline = self._clock() + timeout_s
        while not self.idle and not self.paused:
            self.pump(budget_s=0.05, force=True)
            now = self._clock()
            if now >= deadline or self._only_held():
                break
            wait = self.next_wakeup(now)
            if wait > 0:
                time.sleep(min(wait, 0.05, max(0.0, deadline - now)))
        return self.idle

    def _only_held(self) -> bool:
        return (
            self._inflight is None
            and not self._backlog
            and not any(map(self._sendable, self._buffer.values()))
        )

    def _backoff(self, attempt: int) -> float:
        growth = float(2 ** min(attempt, 30))
        base = min(self.retry.max_backoff_s, self.retry.initial_backoff_s * growth)
        return base * (0.5 + 0.5 * self._random.random())

    def close(self) -> None:
        """Stop the sending threads (the transport is its owner's to close)."""
        self._pool.shutdown(wait=True)

    def _group(self, batch: _Batch) -> list[Request]:
        """The next requests to send together: from the first pending one on, as many as
        ``max_in_flight`` allows and the limiter admits, stopping at the first that
        shares a customer with one before it (so a customer's requests keep their
        order). Their cost is taken from the limiter."""
        group: list[Request] = []
        customers: set[str] = set()
        for request in batch.requests[batch.index : batch.index + self.max_in_flight]:
            ids = {change.customer_id for change in request.changes}
            if group and not customers.isdisjoint(ids):
                break
            if self.limiter.wait_s(request.cost) > 0:
                break
            self.limiter.take(request.cost)
            group.append(request)
            customers |= ids
        return group

    def _send_one(self, request: Request) -> _Sent | _Failed:
        """One request and its interpretation; an error is returned, not raised, so the
        outcomes of requests sent together are handled in order in the sink's thread."""
        tracer = self.tracer
        status: int | None = None
        try:
            if tracer is None:
                response = self.transport.send(request)
                status = response.status
                return _Sent(response, self.client.interpret(request, response))
            with tracer.request(request) as span:
                response = self.transport.send(request)
                status = response.status
                span.set_attribute("http.response.status_code", status)
                rejected = self.client.interpret(request, response)
                if rejected:
                    span.set_attribute("streamsync.rejected", len(rejected))
                return _Sent(response, rejected)
        except DeliveryError as exc:
            return _Failed(exc, status)

    def _send(self, group: list[Request]) -> list[_Sent | _Failed]:
        if len(group) == 1:
            return [self._send_one(group[0])]
        return list(self._pool.map(self._send_one, group))

    def _step(self, now: float) -> bool:
        """Advance the in-flight batch by one group of requests sent together (one
        request with ``max_in_flight: 1``); False when it must wait."""
        batch = self._inflight
        assert batch is not None
        if batch.index >= len(batch.requests):
            self._settle(batch)
            return True
        if now < batch.not_before:
            return False
        group = self._group(batch)
        if not group:
            return False
        if self.dry_run:
            for request in group:
                self._log_dry_run(request)
            batch.index += len(group)
            return True
        self.stats.requests += len(group)
        observer = self.observer
        name = self.client.name
        answered = False  # the destination answered at least one request
        retry_after: float | None = None  # a 429's reset (epoch seconds)
        failed: RetriableError | None = None
        fatal: FatalDestinationError | None = None
        replacements: list[Request] = []
        for request, sent in zip(group, self._send(group), strict=True):
            if isinstance(sent, _Sent):
                status: int | None = sent.response.status
                outcome: _Sent | DeliveryError = sent
            else:
                status, outcome = sent.status, sent.error
            if observer is not None:
                observer.destination_request(name, status)
            if isinstance(outcome, RateLimited):
                self.stats.rate_limited += 1
                self.last_error = f"429: {outcome}"
                retry_after = max(retry_after or 0.0, outcome.not_before)
                replacements.append(request)
                if observer is not None:
                    observer.destination_retry(name, "rate_limited")
            elif isinstance(outcome, RetriableError):
                self.stats.retries += 1
                self.last_error = str(outcome)
                failed = outcome
                replacements.append(request)
                if observer is not None:
                    reason = "no_response" if status is None else "server_error"
                    observer.destination_retry(name, reason)
            elif isinstance(outcome, BatchRejected):
                answered = True
                self.last_error = f"rejected: {outcome.rejection.message}"
                replacements.extend(self._split(batch, request, outcome.rejection))
            elif isinstance(outcome, FatalDestinationError):
                fatal = fatal or outcome
            elif isinstance(outcome, DeliveryError):
                raise outcome
            else:
                answered = True
                response = outcome.response
                if response.headers.get("x-ratelimit-remaining") == "0":
                    # Someone else (another replica, another integration on the same
                    # workspace) used the window up: wait for its reset rather than
                    # collect a 429.
                    reset = self.client.reset_at(response, time.time())
                    if reset is not None:
                        self.limiter.block_until(reset)
                self.stats.objects += request.objects
                batch.rejected.extend(outcome.rejected)
        if fatal is not None:
            raise fatal
        batch.requests[batch.index : batch.index + len(group)] = replacements
        if retry_after is None and failed is None:
            batch.attempt = 0
            return True
        attempt = 0 if answered else batch.attempt
        batch.attempt = attempt + 1
        if retry_after is not None:
            self.limiter.block_until(retry_after)
            log.warning("%s: rate limited; nothing sent before the reset", name)
        if failed is not None:
            delay = self._backoff(attempt)
            batch.not_before = now + delay
            log.warning("%s: %s; retrying in %.1fs", name, failed, delay)
        return False

    def _split(self, batch: _Batch, request: Request, rejection: Rejection) -> list[Request]:
        """What replaces a request refused as a whole: its halves, planned again, until
        the refused change is alone, which is then dead-lettered with the reason."""
        if len(request.changes) == 1:
            batch.rejected.append((request.changes[0], rejection))
            return []
        self.stats.splits += 1
        half = len(request.changes) // 2
        return self.client.plan(request.changes[:half]) + self.client.plan(request.changes[half:])

    def _settle(self, batch: _Batch) -> None:
        refused = {id(change) for change, _ in batch.rejected}
        for change, rejection in batch.rejected:
            self.stats.rejected[change.audience] += 1
            if change.then is not None:  # the value stays where it was acknowledged
                self.offsets.done(change.partition, change.then.offsets)
                change.then = None
            for offset in change.offsets[:-1]:
                self.offsets.done(change.partition, [offset])
            last = change.offsets[-1] if change.offsets else -1  # -1: a repair, no record
            self.dead_letters.delta(
                change.delta, change.partition, last, reason=REJECTED,
                destination=self.client.name, rejection=rejection,
            )  # fmt: skip
            self.offsets.done(change.partition, change.offsets[-1:])
        acked = [c for c in batch.changes if id(c) not in refused]
        if self.dry_run:  # logged, not sent: nothing was delivered
            self.stats.would_deliver += len(acked)
        else:
            self.acknowledged.settle(acked, (change for change, _ in batch.rejected))
        for change in acked:
            if not self.dry_run:
                self.stats.delivered[(change.audience, "enter" if change.enter else "exit")] += 1
            self.offsets.done(change.partition, change.offsets)
        for change in acked:
            if change.then is not None:
                if not self.dry_run:
                    self.stats.moved[change.audience] += 1
                self._follow(change.then)
                change.then = None
        self._inflight = None
        now = time.time()
        observer = self.observer
        if observer is not None and not self.dry_run:
            name = self.client.name
            if batch.rejected:
                observer.deltas_rejected(
                    name, REJECTED, sum(len(c.offsets) for c, _ in batch.rejected)
                )
            if acked:  # changes, as the summary counts them (a backfill has no delta)
                observer.deltas_delivered(name, len(acked))
            for change in acked:
                if change.committed_ms is not None:
                    observer.observe_delta_to_destination(
                        name, max(0.0, now - change.committed_ms / 1000.0)
                    )
        if self.on_ack is not None:
            self.on_ack(acked, now)

    def _follow(self, add: Change) -> None:
        """Queue the add half of a move whose remove was acknowledged. A change of the
        same customer and audience buffered meanwhile is newer: it inherits the offsets
        instead. A dry run recorded nothing, so it would only move again: not queued."""
        key = (add.customer_id, add.audience)
        newer = self._buffer.get(key)
        if newer is not None:
            newer.offsets[:0] = add.offsets
        elif self.dry_run:
            self.offsets.done(add.partition, add.offsets)
        else:
            add.added_at = self._clock()
            self._buffer[key] = add

    def _log_dry_run(self, request: Request) -> None:
        self.stats.dry_run_requests += 1
        log.info(
            "%s dry run: %s %s headers=%s body=%s",
            self.client.name, request.method, request.path,
            self.client.redacted_headers(request.headers),
            self.client.redacted_body(request),
        )  # fmt: skip
