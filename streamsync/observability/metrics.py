"""The named instruments every streamsync role reports through, exposed for Prometheus.

The runtime and the sinks never keep counters of their own for operators: they call the
methods of one :class:`Telemetry` object, and the admin server serves what it holds at
``/metrics``. The facade fixes the metric names, units and label sets in one place, so the
Helm chart's alert rules, the dashboards and the code cannot drift apart.

Metrics are OpenTelemetry instruments read by the SDK's own Prometheus reader
(``opentelemetry-exporter-prometheus``) into a ``prometheus_client`` registry owned by this
object, not the process-global one: two ``Telemetry`` objects (tests, or evaluate and
deliver in one process) never see each other's series.

Costs: counters and gauges are plain dictionary updates under a lock (about 0.2 us),
read by OpenTelemetry's asynchronous instruments at scrape time, because the SDK's
synchronous counter costs about 5 us a call, too much once per delta in the hot loop.
Histograms are the SDK's (about 3-5 us a value), except event-to-delta, which evaluate
fills once per commit with every delta of it (:class:`_Latencies`). A gauge whose
subject went away (a revoked partition, a removed audience) is dropped with
:meth:`Telemetry.forget_partition` / :meth:`Telemetry.forget_audience` instead of
reporting its last value for ever.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Mapping
from typing import Literal

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from streamsync.observability.health import Health
from streamsync.observability.tracing import Tracing

#: Content type of :meth:`Telemetry.render` (the Prometheus text format).
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST

#: Latency buckets in seconds: from the sub-second path the service aims for up to the
#: hour a backlog or a destination outage can take.
LATENCY_BUCKETS_SECONDS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)

Op = Literal["enter", "exit"]
LabelValue = str | int
Labels = tuple[LabelValue, ...]


class _Table:
    """Values by label tuple, observed by an asynchronous instrument at scrape time:
    current values for a gauge (:meth:`set`), running totals for a counter (:meth:`add`).

    For gauges, a dictionary rather than a synchronous OTel gauge also lets a series be
    removed: a synchronous gauge would report a revoked partition's last lag for ever.
    """

    __slots__ = ("_keys", "_lock", "_values")

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = keys
        self._values: dict[Labels, float] = {}
        self._lock = threading.Lock()

    def set(self, labels: Labels, value: float) -> None:
        with self._lock:  # the admin thread copies the table while the runtime writes it
            self._values[labels] = value

    def add(self, labels: Labels, amount: float) -> None:
        with self._lock:
            values = self._values
            values[labels] = values.get(labels, 0) + amount

    def discard(self, **match: LabelValue) -> None:
        """Remove every series whose labels include all of ``match``."""
        wanted = [(self._keys.index(key), value) for key, value in match.items()]
        with self._lock:
            doomed = [
                labels
                for labels in self._values
                if all(labels[index] == value for index, value in wanted)
            ]
            for labels in doomed:
                del self._values[labels]

    def observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        keys = self._keys
        with self._lock:
            items = list(self._values.items())
        return [Observation(value, dict(zip(keys, labels, strict=True))) for labels, value in items]


class _Latencies:
    """A histogram without labels, filled per commit rather than per value, exposed at
    scrape time by :meth:`collect` (registered as a collector of the Prometheus registry).

    The SDK's histogram costs 3-5 us a value; evaluate records one value per delta, which
    was most of its telemetry cost (about 7% of its CPU). Here one commit's values are
    sorted once and each bucket's count is a binary search: per delta, a subtraction.
    The exposition is the SDK's for the same instrument (cumulative ``_bucket`` series
    with ``le``, ``_count``, ``_sum``)."""

    def __init__(self, name: str, description: str, bounds: tuple[float, ...]) -> None:
        self.name = name
        self.description = description
        self._bounds = bounds
        self._cumulative = [0] * len(bounds)  # values <= each bound
        self._count = 0
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, values: list[float]) -> None:
        """Record ``values`` (seconds; negative ones count as 0, as clock skew can give)."""
        if not values:
            return
        values.sort()
        below = bisect.bisect_left(values, 0.0)
        total = math.fsum(values[below:]) if below else math.fsum(values)
        counts = [bisect.bisect_right(values, bound) for bound in self._bounds]
        with self._lock:
            cumulative = self._cumulative
            for i, n in enumerate(counts):
                cumulative[i] += n
            self._count += len(values)
            self._sum += total

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            cumulative, count, total = list(self._cumulative), self._count, self._sum
        buckets = [(repr(float(b)), n) for b, n in zip(self._bounds, cumulative, strict=True)]
        buckets.append(("+Inf", count))
        family = HistogramMetricFamily(self.name, self.description, unit="seconds")
        family.add_metric([], buckets, total)
        return [family]

    def describe(self) -> Iterable[Metric]:
        return self.collect()


class Telemetry:
    """The metrics of one streamsync process (evaluate or deliver), its health and tracing:
    the one object the runtime and the sinks are handed.

    ``role`` and ``service_name`` become resource attributes (Prometheus ``target_info``);
    Kubernetes adds pod and namespace labels when it scrapes.
    """

    def __init__(
        self,
        *,
        service_name: str = "streamsync",
        role: str = "streamsync",
        health: Health | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.health = health if health is not None else Health()
        self.tracing = (
            tracing if tracing is not None else Tracing(service_name=service_name, role=role)
        )
        self.registry = CollectorRegistry(auto_describe=True)
        self._reader = PrometheusMetricReader(registry=self.registry, scope_info_enabled=False)
        resource = Resource.create({"service.name": service_name, "streamsync.role": role})
        self._provider = MeterProvider(metric_readers=[self._reader], resource=resource)
        meter = self._provider.get_meter("streamsync")

        # Ingest.
        self._ingested = _Table(("topic",))
        meter.create_observable_counter(
            "streamsync.records.ingested",
            unit="1",
            description="Input records read, by topic.",
            callbacks=[self._ingested.observe],
        )
        self._skipped = _Table(("topic", "reason"))
        meter.create_observable_counter(
            "streamsync.records.skipped",
            unit="1",
            description="Input records skipped on purpose (no customer key, ...), by reason.",
            callbacks=[self._skipped.observe],
        )
        self._dead_lettered = _Table(("topic", "reason"))
        meter.create_observable_counter(
            "streamsync.records.dead_lettered",
            unit="1",
            description="Input records written to the dead-letter topic, by reason.",
            callbacks=[self._dead_lettered.observe],
        )
        self._lag = _Table(("group", "topic", "partition"))
        meter.create_observable_gauge(
            "streamsync.consumer.lag",
            callbacks=[self._lag.observe],
            unit="1",
            description="Records between the consumer's position and the partition's end.",
        )

        # Evaluate.
        self._changes = _Table(("audience", "op"))
        meter.create_observable_counter(
            "streamsync.audience.changes",
            unit="1",
            description="Membership deltas emitted, by audience and op (enter/exit).",
            callbacks=[self._changes.observe],
        )
        self._keys_dropped = _Table(())
        meter.create_observable_counter(
            "streamsync.customer.keys_dropped",
            unit="1",
            description="Per-key fact entries dropped at evaluate.max_keys_per_customer "
            "(each customer that hit it also gets a customer_capped dead letter).",
            callbacks=[self._keys_dropped.observe],
        )
        self._late = _Table(("lateness",))
        meter.create_observable_counter(
            "streamsync.records.late",
            unit="1",
            description=(
                "Records that arrived behind the clock: lateness=within (applied at their "
                "own event time) or beyond (later than allowed_lateness, applied at the clock)."
            ),
            callbacks=[self._late.observe],
        )
        self._corrections = _Table(("audience", "op"))
        meter.create_observable_counter(
            "streamsync.audience.corrections",
            unit="1",
            description="Membership deltas marked correction (caused by a late record).",
            callbacks=[self._corrections.observe],
        )
        self._event_to_delta = _Latencies(
            "streamsync_event_to_delta_seconds",
            "Wall-clock time from a record's (or deadline's) event time to its delta.",
            LATENCY_BUCKETS_SECONDS,
        )
        self.registry.register(self._event_to_delta)
        self._members = _Table(("audience",))
        meter.create_observable_gauge(
            "streamsync.audience.members",
            callbacks=[self._members.observe],
            unit="1",
            description="Current members of each audience held by this process (holdout included).",
        )
        self._holdout = _Table(("audience",))
        meter.create_observable_gauge(
            "streamsync.audience.holdout_members",
            callbacks=[self._holdout.observe],
            unit="1",
            description="Current holdout members of each audience held by this process.",
        )
        self._stuck = _Table(("audience",))
        meter.create_observable_gauge(
            "streamsync.audience.stuck_members",
            callbacks=[self._stuck.observe],
            unit="1",
            description="Members older than their audience's maximum time to exit.",
        )
        self._rebuild_exact = _Table(("audience", "change"))
        meter.create_observable_gauge(
            "streamsync.audience.rebuild_exact",
            callbacks=[self._rebuild_exact.observe],
            unit="1",
            description="Audiences changed or added since the last start: 1 if rebuilt "
            "exactly (from state, or from complete input history), 0 if the input topics "
            "no longer held all the history their definition needs.",
        )
        self._identity = _Table(("partition", "count"))
        meter.create_observable_gauge(
            "streamsync.identity",
            callbacks=[self._identity.observe],
            unit="1",
            description="Identity resolution of each partition of ids held by this process "
            "(identity.live), by count: ids_held and records_held (now, waiting for a "
            "link), ids_linked, records_forwarded, conflicting_links, ids_expired and "
            "records_expired (since the partition's state began; they move with it).",
        )
        self._restored = _Table(("partition",))
        meter.create_observable_gauge(
            "streamsync.state.restored_records",
            callbacks=[self._restored.observe],
            unit="1",
            description="Changelog records applied so far while restoring a partition's state.",
        )
        self._restore_total = _Table(("partition",))
        meter.create_observable_gauge(
            "streamsync.state.restore_target_records",
            callbacks=[self._restore_total.observe],
            unit="1",
            description="Changelog records to apply to restore a partition's state.",
        )

        # Deliver.
        self._requests = _Table(("destination", "status"))
        meter.create_observable_counter(
            "streamsync.destination.requests",
            unit="1",
            description="HTTP requests to a destination, by status (error: no response).",
            callbacks=[self._requests.observe],
        )
        self._throttled = _Table(("destination",))
        meter.create_observable_counter(
            "streamsync.destination.throttled",
            unit="1",
            description="429 responses from a destination.",
            callbacks=[self._throttled.observe],
        )
        self._retries = _Table(("destination", "reason"))
        meter.create_observable_counter(
            "streamsync.destination.retries",
            unit="1",
            description="Requests retried, by reason (429, 5xx, timeout, connection).",
            callbacks=[self._retries.observe],
        )
        self._delivered = _Table(("destination",))
        meter.create_observable_counter(
            "streamsync.destination.delivered",
            unit="1",
            description="Membership changes a destination acknowledged, from deltas and "
            "from backfills (the deliver summary's delivered count).",
            callbacks=[self._delivered.observe],
        )
        self._rejected = _Table(("destination", "reason"))
        meter.create_observable_counter(
            "streamsync.destination.rejected",
            unit="1",
            description="Deltas dead-lettered by delivery, by reason (attribute_rejected: "
            "only a ride-along value was left out; the change itself was delivered).",
            callbacks=[self._rejected.observe],
        )
        self._identifiers = _Table(("destination", "audience", "result"))
        meter.create_observable_counter(
            "streamsync.identifier.lookups",
            unit="1",
            description="Deltas checked for the identifier a destination needs, by result "
            "(matched/unmatched).",
            callbacks=[self._identifiers.observe],
        )
        self._destination_members = _Table(("destination", "audience", "state"))
        meter.create_observable_gauge(
            "streamsync.destination.members",
            unit="1",
            description="Values a destination holds per audience, by state: desired (the "
            "membership table through its audiences, holdout and rollout, as of the last "
            "comparison), acknowledged (confirmed), pending (sent, no answer on record).",
            callbacks=[self._destination_members.observe],
        )
        self._excluded = _Table(("destination", "audience"))
        meter.create_observable_counter(
            "streamsync.destination.excluded",
            unit="1",
            description="Enters of customers the destination's rollout leaves out (not "
            "sent, or sent as the remove of a value acknowledged before it shrank).",
            callbacks=[self._excluded.observe],
        )
        self._delta_to_destination = meter.create_histogram(
            "streamsync.delta_to_destination",
            unit="s",
            description="Wall-clock time from a delta's commit to its acknowledgement.",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_SECONDS,
        )

        # Health, so a dashboard can show readiness next to the rest.
        meter.create_observable_gauge(
            "streamsync.ready",
            callbacks=[self._observe_ready],
            unit="1",
            description="1 when the process is ready (state restored), else 0.",
        )

    # -- ingest --------------------------------------------------------------------------

    def records_ingested(self, topic: str, count: int = 1) -> None:
        """``count`` records read from ``topic`` (every record, whatever its outcome)."""
        self._ingested.add((topic,), count)

    def records_skipped(self, topic: str, reason: str, count: int = 1) -> None:
        """``count`` records of ``topic`` skipped for ``reason`` (``Skipped.reason``)."""
        self._skipped.add((topic, reason), count)

    def records_dead_lettered(self, topic: str, reason: str, count: int = 1) -> None:
        """``count`` records of ``topic`` dead-lettered for ``reason`` (the reason header)."""
        self._dead_lettered.add((topic, reason), count)

    def set_consumer_lag(self, group: str, topic: str, partition: int, lag: int) -> None:
        """The consumer group's lag on one partition (high watermark minus position)."""
        self._lag.set((group, topic, partition), lag)

    # -- evaluate ------------------------------------------------------------------------

    def membership_changed(self, audience: str, op: Op, count: int = 1) -> None:
        """``count`` deltas of ``op`` for ``audience`` were emitted (committed)."""
        self._changes.add((audience, op), count)

    def keys_dropped(self, count: int) -> None:
        """``count`` per-key fact entries were dropped at the per-customer cap."""
        self._keys_dropped.add((), count)

    def records_late(self, within: int, beyond: int) -> None:
        """Records behind the clock: ``within`` the allowed lateness, and ``beyond`` it."""
        if within:
            self._late.add(("within",), within)
        if beyond:
            self._late.add(("beyond",), beyond)

    def membership_corrected(self, audience: str, op: Op, count: int = 1) -> None:
        """``count`` of the deltas reported by :meth:`membership_changed` were corrections."""
        self._corrections.add((audience, op), count)

    def observe_event_to_delta(self, seconds: float) -> None:
        """Wall clock at the delta's commit minus its event time (``at_ms``)."""
        self._event_to_delta.observe([seconds])

    def observe_events_to_deltas(self, now_s: float, at_ms: list[int]) -> None:
        """:meth:`observe_event_to_delta` for every delta of a commit at once: ``now_s``
        is the wall clock at the commit, ``at_ms`` the deltas' event times."""
        self._event_to_delta.observe([now_s - at / 1000 for at in at_ms])

    def set_audience_size(self, audience: str, members: int, holdout_members: int = 0) -> None:
        """Current members (and holdout members among them) of ``audience`` in this process."""
        self._members.set((audience,), members)
        self._holdout.set((audience,), holdout_members)

    def set_stuck_members(self, audience: str, count: int) -> None:
        """Members older than the audience's maximum time to exit (0 when healthy)."""
        self._stuck.set((audience,), count)

    def set_rebuild_exact(self, audience: str, change: str, exact: bool) -> None:
        """Audience ``audience`` was ``change``d (changed or added) at start-up."""
        self._rebuild_exact.set((audience, change), 1 if exact else 0)

    def set_identity(self, partition: int, counts: Mapping[str, int]) -> None:
        """What the identity table of ``partition`` holds and has done (see
        :class:`~streamsync.identity.resolver.IdentityStats`)."""
        for name, value in counts.items():
            self._identity.set((partition, name), value)

    def set_restore_progress(self, partition: int, restored: int, target: int) -> None:
        """Restoring ``partition``'s state: ``restored`` of ``target`` changelog records."""
        self._restored.set((partition,), restored)
        self._restore_total.set((partition,), target)

    # -- deliver -------------------------------------------------------------------------

    def destination_request(self, destination: str, status: int | None) -> None:
        """One HTTP request answered with ``status`` (``None``: timeout or no response).

        A 429 is also counted as throttled, so the limiter's quality is one query away.
        """
        self._requests.add((destination, _status(status)), 1)
        if status == 429:
            self._throttled.add((destination,), 1)

    def destination_retry(self, destination: str, reason: str) -> None:
        """A request to ``destination`` is retried because of ``reason``."""
        self._retries.add((destination, reason), 1)

    def deltas_delivered(self, destination: str, count: int = 1) -> None:
        """``count`` deltas acknowledged by ``destination``."""
        self._delivered.add((destination,), count)

    def deltas_rejected(self, destination: str, reason: str, count: int = 1) -> None:
        """``count`` deltas rejected by ``destination`` (or unmatched) and dead-lettered."""
        self._rejected.add((destination, reason), count)

    def identifier_lookup(
        self, destination: str, audience: str, matched: bool, count: int = 1
    ) -> None:
        """``count`` deltas of ``audience`` had (``matched``) or lacked the identifier
        ``destination`` needs; the match rate is matched over all."""
        result = "matched" if matched else "unmatched"
        self._identifiers.add((destination, audience, result), count)

    def set_destination_members(
        self, destination: str, audience: str, state: str, count: int
    ) -> None:
        """``count`` values of ``audience`` on ``destination`` in ``state`` (desired,
        acknowledged, pending): the destination's size, and how far it is from desired."""
        self._destination_members.set((destination, audience, state), count)

    def deltas_excluded(self, destination: str, audience: str, count: int = 1) -> None:
        """``count`` enters of ``audience`` left out by ``destination``'s rollout."""
        self._excluded.add((destination, audience), count)

    def observe_delta_to_destination(self, destination: str, seconds: float) -> None:
        """Wall clock at the destination's acknowledgement minus the delta's commit time."""
        self._delta_to_destination.record(seconds, {"destination": destination})

    # -- lifecycle -----------------------------------------------------------------------

    def forget_partition(self, partition: int, topic: str | None = None) -> None:
        """Drop the gauges of a revoked partition (of ``topic`` only, when given)."""
        if topic is None:
            self._lag.discard(partition=partition)
        else:
            self._lag.discard(topic=topic, partition=partition)
        self._restored.discard(partition=partition)
        self._restore_total.discard(partition=partition)
        if topic is None:
            self._identity.discard(partition=partition)

    def forget_audience(self, audience: str) -> None:
        """Drop the gauges of an audience no longer evaluated here."""
        for table in (self._members, self._holdout, self._stuck):
            table.discard(audience=audience)

    def render(self) -> bytes:
        """The current metrics in the Prometheus text format (what ``/metrics`` serves)."""
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        """Stop the reader and flush the tracer; the object must not be used afterwards."""
        self._provider.shutdown()
        self.tracing.shutdown()

    def _observe_ready(self, _options: CallbackOptions) -> Iterable[Observation]:
        ready, _ = self.health.readiness()
        return [Observation(1 if ready else 0)]


def _status(status: int | None) -> str:
    return "error" if status is None else str(status)
