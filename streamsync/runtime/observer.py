"""What the evaluate service reports to the process telemetry, and when.

:class:`EvaluateObserver` implements :class:`~streamsync.runtime.telemetry.EvaluateTelemetry`,
the calls the runtime makes at a handful of points; everything an operator sees is
derived here, from what those calls pass (never from the runtime's own attributes), so
the exactly-once cycle stays free of metric code:

* :meth:`~EvaluateObserver.emitted` as deltas are produced (kept, not counted: the
  transaction may still abort), :meth:`~EvaluateObserver.committed` after a commit
  (records ingested, skipped and dead-lettered per topic as the difference of the
  committed counts, enters and exits per audience, event-to-delta latency, audience
  sizes) and :meth:`~EvaluateObserver.aborted` after an abort (the kept deltas are
  dropped; their records are read and counted again);
* :meth:`~EvaluateObserver.task_opened` when a task takes over state (restored or
  parked): its members are counted from the state once, then followed delta by delta;
  :meth:`~EvaluateObserver.restoring` / :meth:`~EvaluateObserver.assigned` /
  :meth:`~EvaluateObserver.revoked` around rebalances, for readiness (not ready until
  every assigned task is restored), restore progress and per-partition gauges;
* :meth:`~EvaluateObserver.tick` once per loop turn: liveness beat, and at a slower
  pace consumer lag and stuck members.
* :meth:`~EvaluateObserver.received` for each decoded record and
  :meth:`~EvaluateObserver.trace_headers` for each delta: the W3C trace context of an
  input record is kept by record id and continued into the headers of the deltas it
  qualifies (those deltas are released by the engine later, not while it takes the
  record).

Audience and holdout sizes are those of the tasks this process holds; the cluster's
sizes are the sum over evaluate pods. Stuck members are members whose exit deadline is
overdue in wall-clock time by more than the allowed lateness plus the idle grace plus
:data:`STUCK_MARGIN_MS`: deadlines the partition's watermark has not reached (an idle or
stalled input partition, or evaluate behind). Audiences left only by a new record have
no maximum time to exit and never count.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, cast

from opentelemetry.trace import SpanKind

from streamsync.deltas.record import ENTER, MembershipDelta
from streamsync.observability.lag import LagSource, report_consumer_lag
from streamsync.observability.metrics import Telemetry

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message

    from streamsync.audiences.definition import Audience
    from streamsync.audiences.migration import Migration
    from streamsync.ingest.event import Event
    from streamsync.runtime.config import EvaluateConfig
    from streamsync.runtime.stats import EvaluateStats
    from streamsync.runtime.task import Task

#: The W3C trace context headers.
TRACE_HEADERS = frozenset({"traceparent", "tracestate"})

#: Slack past lateness and idle grace before an overdue exit counts as stuck.
STUCK_MARGIN_MS = 60_000


class EvaluateObserver:
    """Reports one evaluate application to ``telemetry``; see the module docstring."""

    def __init__(
        self,
        telemetry: Telemetry,
        *,
        group: str,
        audiences: Sequence[str],
        stuck_after_ms: int,
        lag_interval_s: float = 1.0,
        stuck_interval_s: float = 30.0,
        max_trace_contexts: int = 100_000,
    ) -> None:
        self.telemetry = telemetry
        self.group = group
        self.audiences = list(audiences)
        self._known = frozenset(self.audiences)
        self._dropped_reported = 0
        self.stuck_after_ms = stuck_after_ms
        self.lag_interval_s = lag_interval_s
        self.stuck_interval_s = stuck_interval_s
        self._pending: list[tuple[int, list[MembershipDelta]]] = []
        #: partition -> audience -> [members, holdout members], as of the last commit
        self._sizes: dict[int, dict[str, list[int]]] = {}
        #: topic -> (records, skipped by reason, dead-lettered by reason) reported so far
        self._reported: dict[str, tuple[int, Counter[str], Counter[str]]] = {}
        #: (late, too late) records reported so far
        self._late_reported = (0, 0)
        self._next_lag = 0.0
        self._next_stuck = 0.0
        #: record id -> its trace headers, newest last (bounded: oldest dropped first)
        self._contexts: OrderedDict[str, list[tuple[str, bytes | str]]] = OrderedDict()
        self.max_trace_contexts = max_trace_contexts

    @classmethod
    def for_settings(
        cls, telemetry: Telemetry, settings: EvaluateConfig, audiences: Sequence[Audience]
    ) -> EvaluateObserver:
        """The observer of a service with ``settings`` evaluating ``audiences``: its
        group, audience names and stuck threshold."""
        return cls(
            telemetry,
            group=settings.group_id,
            audiences=[audience.name for audience in audiences],
            stuck_after_ms=settings.allowed_lateness_ms + settings.idle_grace_ms + STUCK_MARGIN_MS,
        )

    # -- the cycle ---------------------------------------------------------------------------

    def emitted(self, deltas: list[MembershipDelta], partition: int) -> None:
        """Deltas of task ``partition`` produced into the open transaction."""
        self._pending.append((partition, deltas))

    @property
    def tracing(self) -> bool:
        """Whether deltas get trace headers: some input record carried a context, or
        spans are exported (then a delta of a record without one starts a trace)."""
        return bool(self._contexts) or self.telemetry.tracing.exporting

    def received(self, message: Message, event: Event) -> None:
        """An input record was decoded: keep its W3C trace context, if it has one, by
        record id, for the deltas that record will qualify (the engine releases records
        from its reorder buffer and fires deadlines later, not while taking them)."""
        raw = message.headers()
        if not raw or event.record_id is None:
            return
        pairs = list(raw.items()) if isinstance(raw, dict) else raw
        context = [
            (name, value)
            for name, value in pairs
            if name.lower() in TRACE_HEADERS and value is not None
        ]
        if context:
            contexts = self._contexts
            contexts[event.record_id] = context
            contexts.move_to_end(event.record_id)
            if len(contexts) > self.max_trace_contexts:
                contexts.popitem(last=False)

    def trace_headers(self, delta: MembershipDelta) -> list[tuple[str, str | bytes | None]] | None:
        """Headers for ``delta``: the context of a span continuing the trace of the first
        of its qualifying records that carried one, so deliver's spans join that trace."""
        parent = None
        for record_id in delta.record_ids:
            parent = self._contexts.get(record_id)
            if parent is not None:
                break
        tracing = self.telemetry.tracing
        if parent is None and not tracing.exporting:
            return None
        with tracing.span(
            "evaluate",
            headers=parent,
            kind=SpanKind.CONSUMER,
            attributes={"streamsync.audience": delta.audience, "streamsync.op": delta.op},
        ):
            return list(tracing.headers())

    def aborted(self) -> None:
        """The open transaction was aborted: its deltas never happened."""
        self._pending.clear()

    def committed(self, stats: EvaluateStats) -> None:
        """The open transaction committed; ``stats`` are the counts as of that commit."""
        telemetry = self.telemetry
        for topic, topic_stats in stats.topics.items():
            records, skipped, dead = self._reported.get(topic, (0, Counter(), Counter()))
            new_records = topic_stats.records - records
            if new_records:
                telemetry.records_ingested(topic, new_records)
            for reason, count in (topic_stats.skipped - skipped).items():
                telemetry.records_skipped(topic, reason, count)
            for reason, count in (topic_stats.dead_lettered - dead).items():
                telemetry.records_dead_lettered(topic, reason, count)
            self._reported[topic] = (
                topic_stats.records,
                Counter(topic_stats.skipped),
                Counter(topic_stats.dead_lettered),
            )
        if stats.keys_dropped != self._dropped_reported:
            telemetry.keys_dropped(stats.keys_dropped - self._dropped_reported)
            self._dropped_reported = stats.keys_dropped
        late = (stats.late, stats.too_late)
        if late != self._late_reported:
            telemetry.records_late(
                late[0] - self._late_reported[0], late[1] - self._late_reported[1]
            )
            self._late_reported = late
        pending, self._pending = self._pending, []
        if not pending:
            return
        # Per delta only what a commit's totals need (one tally key, its event time);
        # everything else is per distinct key, a few dozen per commit.
        tally: Counter[tuple[int, str, str, bool, bool]] = Counter()
        at_ms: list[int] = []
        for partition, deltas in pending:
            tally.update([(partition, d.audience, d.op, d.holdout, d.correction) for d in deltas])
            at_ms.extend([d.at_ms for d in deltas])
        telemetry.observe_events_to_deltas(time.time(), at_ms)
        changes: Counter[tuple[str, str]] = Counter()
        corrections: Counter[tuple[str, str]] = Counter()
        touched: set[str] = set()
        for (partition, audience, op, holdout, correction), count in tally.items():
            changes[(audience, op)] += count
            if correction:
                corrections[(audience, op)] += count
            sizes = self._sizes.setdefault(partition, {})
            size = sizes.get(audience)
            if size is None:
                if audience not in self._known:  # a removed audience retiring
                    continue
                size = sizes[audience] = [0, 0]
            step = count if op == ENTER else -count
            size[0] += step
            if holdout:
                size[1] += step
            touched.add(audience)
        for (audience, op), count in changes.items():
            telemetry.membership_changed(audience, op, count)  # type: ignore[arg-type]
        for (audience, op), count in corrections.items():
            telemetry.membership_corrected(audience, op, count)  # type: ignore[arg-type]
        self._report_sizes(touched)

    def tick(self, consumer: Consumer | None, tasks: Iterable[Task]) -> None:
        """Once per loop turn: the loop is alive; lag and stuck members now and then."""
        telemetry = self.telemetry
        telemetry.health.beat()
        now = time.monotonic()
        if consumer is not None and now >= self._next_lag:
            self._next_lag = now + self.lag_interval_s
            report_consumer_lag(telemetry, cast("LagSource", consumer), self.group)
            for task in tasks:
                if task.identity_topic:
                    telemetry.set_identity(task.partition, asdict(task.table.stats))
        if now >= self._next_stuck:
            self._next_stuck = now + self.stuck_interval_s
            before_ms = int(time.time() * 1000) - self.stuck_after_ms
            stuck: Counter[str] = Counter()
            for task in tasks:
                stuck.update(task.overdue_members(before_ms))
            for audience in self.audiences:
                telemetry.set_stuck_members(audience, stuck[audience])

    # -- rebalances ----------------------------------------------------------------------------

    def restoring(self, partitions: Iterable[int]) -> None:
        """Partitions were assigned and their state is being restored: not ready."""
        numbers = sorted(partitions)
        if numbers:
            self.telemetry.health.set_not_ready(
                f"restoring state of partitions {', '.join(map(str, numbers))}"
            )

    def restore_progress(self, partition: int, done: int, total: int) -> None:
        """A restore read on: the process is alive (a long restore is not a stalled
        loop), but not ready until every partition is restored."""
        self.telemetry.set_restore_progress(partition, done, total)
        self.telemetry.health.beat()

    def definitions_changed(self, migration: Migration) -> None:
        """A task applied changed definitions: which audiences were rebuilt exactly."""
        for change in migration.changes.values():
            if change.kind in ("changed", "added"):
                exact = not change.missing
                self.telemetry.set_rebuild_exact(change.name, change.kind, exact)

    def task_opened(self, task: Task) -> None:
        """``task`` holds state as of the last commit: count its members once."""
        self._sizes[task.partition] = {
            audience: [members, holdout] for audience, (members, holdout) in task.sizes().items()
        }
        self._report_sizes(self.audiences)

    def assigned(self) -> None:
        """Every assigned task is restored: ready."""
        self.telemetry.health.set_ready()
        self._next_lag = 0.0

    def revoked(self, partitions: Iterable[int]) -> None:
        """Partitions went to another member: drop their sizes, and their lag and
        restore progress (of every input topic: one task per partition number)."""
        for number in set(partitions):
            self._sizes.pop(number, None)
            self.telemetry.forget_partition(number)
        self._report_sizes(self.audiences)

    def _report_sizes(self, audiences: Iterable[str]) -> None:
        for audience in audiences:
            members = holdout = 0
            for sizes in self._sizes.values():
                size = sizes.get(audience)
                if size is not None:
                    members += size[0]
                    holdout += size[1]
            self.telemetry.set_audience_size(audience, members, holdout)
