"""The deliver loop: the deltas topic -> one destination, until stopped.

One process (one Kubernetes Deployment) per destination, each in its own consumer group
(``streamsync-deliver-<name>`` by default), reading the deltas topic with
``isolation.level=read_committed`` so only deltas of committed evaluate transactions are
delivered. Deltas are keyed by customer id, so a customer's deltas are in one partition,
in order; the :class:`~streamsync.destinations.sink.DeliverySink` keeps that order to
the destination.

Delivery reconciles (:mod:`streamsync.destinations.reconcile`). When partitions are
assigned (start, rebalance), the destination's acknowledged state of those partitions is
read back from its changelog (:mod:`~streamsync.destinations.acknowledged`) and compared
with the desired state, the membership table's same partitions through the destination's
filter (:mod:`~streamsync.destinations.desired`): the differences (backfill, detach) are
sent like deltas. Then the deltas keep it current in real time, each change checked
against the acknowledged state before it is sent. A partition this group never committed
starts at the deltas' end as of just before the table was read, since the table already
holds everything before it (without a table, at the deltas' beginning, as the deltas are
then the whole history).

Offsets are committed (every :data:`COMMIT_INTERVAL_S`, and at the end) only up to the
oldest delta not yet acknowledged by the destination or written to the dead-letter topic
(which is flushed first, as is the acknowledged state). A crash therefore re-delivers some
acknowledged changes, which is harmless: every write sets membership to a value
(add/remove of one array element, a boolean), never toggles it.

:func:`run_delivery` runs several destinations for a bounded time in threads and
returns their counts (what the demo needs).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from confluent_kafka import Consumer, IsolationLevel, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from streamsync.config import AppConfig
from streamsync.credentials import CredentialsError
from streamsync.dead_letter import DEAD_LETTER_PRODUCER_OVERRIDES, topic_max_message_bytes
from streamsync.deltas.codec import delta_decoder
from streamsync.destinations.acknowledged import (
    AcknowledgedState,
    acknowledged_topic,
    ensure_topic,
)
from streamsync.destinations.checks import check_audience_names
from streamsync.destinations.client import Change, DestinationClient
from streamsync.destinations.commands import ControlView, control_topic
from streamsync.destinations.config import DestinationConfig
from streamsync.destinations.control import ControlFile
from streamsync.destinations.control_topic import (
    ControlFollower,
    ControlWriter,
    ensure_control_topic,
)
from streamsync.destinations.dead_letter import DeliveryDeadLetters
from streamsync.destinations.desired import DesiredFilter, read_desired, table_partitions
from streamsync.destinations.errors import DeliverSetupError, FatalDestinationError
from streamsync.destinations.kinds import build_client
from streamsync.destinations.offsets import OffsetTracker
from streamsync.destinations.reconcile import plan_repairs
from streamsync.destinations.sink import DeliveryObserver, DeliverySink, SinkStats, Transport
from streamsync.destinations.tracing import RequestTracer
from streamsync.destinations.transport import HttpTransport
from streamsync.errors import StreamsyncError
from streamsync.kafka.config import admin_config, consumer_config, producer_config
from streamsync.kafka.health import ClientHealth, KafkaUnavailable, client_settings
from streamsync.observability.tracing import ReceivedHeaders, Tracing

log = logging.getLogger("streamsync.deliver")

COMMIT_INTERVAL_S = 0.5
#: How long one attempt to reach the control topic at start-up may take.
_CONTROL_ATTEMPT_S = 5.0
#: How often the destination's size (desired, acknowledged, pending) is reported.
SIZE_EVERY_S = 15.0
#: At most one report of a changed last error to the control topic per this many seconds.
REPORT_EVERY_S = 5.0
_CONSUME_BATCH = 500


class HealthReporter(Protocol):
    """Liveness and readiness (:class:`streamsync.observability.health.Health` fits)."""

    def set_ready(self) -> None: ...

    def beat(self) -> None: ...


@dataclass
class DeliverResult:
    destination: str
    stats: SinkStats
    consumed: int = 0
    skipped_not_routed: int = 0
    malformed: int = 0
    dead_letters: int = 0
    elapsed_s: float = 0.0
    stopped_by: str = ""
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "consumed": self.consumed,
            "not_routed": self.skipped_not_routed,
            "malformed": self.malformed,
            "dead_letters": self.dead_letters,
            **self.stats.as_dict(),
        }


def routed_audiences(
    name: str, dest: DestinationConfig, known: Collection[str] | None = None
) -> frozenset[str] | None:
    """The audiences ``name`` receives: ``audiences`` plus those whose definition names it
    in ``destinations`` (from ``audience_files``); ``None`` means every audience. With
    ``known`` (the configured destination names), an audience routing to a name that is
    not configured is a :class:`DeliverSetupError` (a typo would otherwise send nothing)."""
    if dest.audiences is None and dest.audience_files is None:
        return None
    chosen = set(dest.audiences or ())
    if dest.audience_files is not None:
        from streamsync.audiences.loader import (
            AudienceDefinitionError,
            AudienceFileError,
            load_audiences,
        )

        try:
            audiences = load_audiences(dest.audience_files)
        except AudienceDefinitionError as exc:
            first = exc.problems[0] if exc.problems else "invalid"
            raise DeliverSetupError(f"audience files for {name!r}: {first}") from None
        except AudienceFileError as exc:
            raise DeliverSetupError(f"audience files for {name!r}: {exc}") from None
        for audience in audiences:
            for target in audience.destinations:
                if known is not None and target not in known:
                    raise DeliverSetupError(
                        f"audience {audience.name!r} routes to destination {target!r}, which "
                        f"is not configured (configured: {', '.join(sorted(known))})"
                    )
        chosen.update(a.name for a in audiences if name in a.destinations)
    return frozenset(chosen)


def _stable_ends(admin: AdminClient, topic: str, partitions: list[int]) -> dict[int, int]:
    """Each partition's last stable offset: the end a ``read_committed`` reader sees.
    Not the high watermark: records of evaluate transactions still open lie below it,
    are not in the table read that follows, and would be skipped once they commit."""
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    request = {TopicPartition(topic, p): latest for p in partitions}
    answers = admin.list_offsets(
        request, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=30
    )
    return {tp.partition: future.result(30).offset for tp, future in answers.items()}


class DeliverLoop:
    """Delivers the deltas topic to one configured destination."""

    def __init__(
        self,
        config: AppConfig,
        name: str,
        *,
        env: Mapping[str, str] | None = None,
        on_ack: Callable[[list[Change], float], None] | None = None,
        transport: Transport | None = None,
        dry_run: bool | None = None,
        progress: Callable[[DeliverResult, DeliverySink], None] | None = None,
        progress_interval_s: float = 10.0,
        observer: DeliveryObserver | None = None,
        health: HealthReporter | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        if name not in config.destinations:
            known = ", ".join(sorted(config.destinations)) or "none"
            raise DeliverSetupError(f"no destination named {name!r} (configured: {known})")
        self.config = config
        self.name = name
        self.dest = config.destinations[name]
        self.dry_run = self.dest.dry_run if dry_run is None else dry_run
        try:
            secret = self.dest.credentials.read(env)
            self.client: DestinationClient = build_client(self.dest, name, secret, env)
        except CredentialsError as exc:
            raise DeliverSetupError(f"destination {name!r}: {exc}") from None
        try:
            # Read now (the SASL password may be named, not written): a missing one is a
            # set-up error, not a failure of the thread that would build the clients.
            self._kafka_settings = config.kafka.client_config(env)
        except CredentialsError as exc:
            raise DeliverSetupError(str(exc)) from None
        self.routes = routed_audiences(name, self.dest, config.destinations)
        check_audience_names(config, name)
        #: which members belong on this destination (the desired state's filter)
        self.want = DesiredFilter(self.routes, self.dest.holdout, self.dest.rollout)
        #: the compacted changelog of what this destination acknowledged
        self.acknowledged_topic = acknowledged_topic(self.dest.consumer_group(name))
        self.transport: Transport = transport or HttpTransport(
            self.dest.base_url, self.dest.retry.timeout_s
        )
        self.on_ack = on_ack
        self.progress = progress
        self.progress_interval_s = progress_interval_s
        self.observer = observer
        self.health = health
        #: spans of destination requests, linked to the deltas' traces (exported or not:
        #: see :mod:`streamsync.destinations.tracing`)
        self.tracing = tracing
        self.control = ControlFile(self.dest.control_file)
        #: the destination's control topic (:mod:`~streamsync.destinations.commands`)
        self.control_topic = control_topic(self.dest.consumer_group(name))
        #: what the control topic said when last applied
        self.view = ControlView()
        #: the id this replica reports its state under in the control topic
        self.replica_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        #: the filter changed or a resync came: compare the owned partitions again
        self._replan = False
        #: owned partition -> resync id per scope applied here since the topic was read
        self._applied: dict[int, dict[str | None, str]] = {}
        #: writes this replica's records to the control topic (set by :meth:`run`)
        self._reporter: ControlWriter | None = None
        self._reported: tuple[object, ...] = ()
        self._reported_at = float("-inf")
        #: desired members per audience of each owned partition, as last compared
        self._desired: dict[int, Counter[str]] = {}
        self.offsets = OffsetTracker()
        self._stop = threading.Event()
        #: the clients' errors and the outage (shared with evaluate and ingest; delivery
        #: has no broker timeout: it waits for the cluster as long as it is asked to run)
        self.kafka_health = ClientHealth(
            config.kafka.bootstrap_servers, logger=log, level=logging.DEBUG
        )
        self._assigned: list[TopicPartition] = []
        self._paused = False
        self._decode = delta_decoder(config.deltas.format)
        self.sink: DeliverySink | None = None
        #: an error of the assignment callback, raised from the loop (not inside librdkafka)
        self._failure: BaseException | None = None
        self._topic_ready = False

    @property
    def partitions(self) -> list[int]:
        """The deltas partitions this loop owns now."""
        return sorted(p.partition for p in self._assigned)

    def stop(self) -> None:
        """Finish (drain what the destination accepts, commit) and return; signal-safe."""
        self._stop.set()

    # -- kafka callbacks ---------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned = list(partitions)
        self._paused = False
        if self.sink is None or not partitions:
            return
        try:
            self._reconcile(consumer, partitions, self.sink)
        except Exception as exc:  # raised by the loop, outside librdkafka's callback
            self._failure = exc

    def _reconcile(
        self, consumer: Consumer, partitions: list[TopicPartition], sink: DeliverySink
    ) -> None:
        """Read back what the destination acknowledged for ``partitions``, compare it with
        the table's, queue the differences, and assign the deltas from where to go on."""
        topic = self.config.deltas.topic
        numbers = sorted(p.partition for p in partitions)
        count = len(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        admin = AdminClient(admin_config(self.config.kafka.bootstrap_servers,
                                         self._kafka_settings))  # fmt: skip
        if not self.dry_run and not self._topic_ready:
            have = ensure_topic(admin, self.acknowledged_topic, count)
            if have != count:
                raise DeliverSetupError(
                    f"topic {self.acknowledged_topic} has {have} partitions, the deltas "
                    f"topic {topic} {count}; delete it (the destination is then "
                    "reconciled from scratch) or use another group_id"
                )
            self._topic_ready = True
        acknowledged = sink.acknowledged
        acknowledged.restore(self.config, numbers)
        self._apply_resyncs(sink, numbers)
        table = table_partitions(self.config)
        if table is not None and table != count:
            raise DeliverSetupError(
                f"membership topic {self.config.deltas.members} has {table} partitions, "
                f"the deltas topic {topic} {count}: they must be partitioned alike"
            )
        snapshot = None
        if table is not None:
            # Where the deltas go on from is fixed before the table is read: every delta
            # after it is read, every one before it is in the table already.
            positions = consumer.committed(partitions, timeout=30)
            fresh = [p for p in positions if p.offset < 0]
            if fresh:
                stable = _stable_ends(admin, topic, [p.partition for p in fresh])
                for position in fresh:
                    position.offset = stable[position.partition]
            snapshot = read_desired(self.config, numbers, self.want)
            consumer.assign(positions)
        repairs = 0
        for partition in numbers:
            desired = None if snapshot is None else snapshot.partitions[partition]
            self._desired[partition] = Counter(a for a, _ in desired or ())
            planned = plan_repairs(
                desired, acknowledged.entries(partition), self.want, sink.client.identify
            )
            sink.reconcile(partition, planned)
            repairs += len(planned)
        log.info(
            "partitions %s: %d acknowledged, %s desired, %d to send",
            ",".join(map(str, numbers)), sum(len(acknowledged.entries(p)) for p in numbers),
            "no table:" if snapshot is None else snapshot.members(), repairs,
        )  # fmt: skip

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {p.partition for p in partitions}
        self._commit(consumer)
        if self.sink is not None:
            self.sink.drop_partitions(gone)
            self.sink.acknowledged.forget(gone)
        self.offsets.forget(gone)
        for partition in gone:
            self._desired.pop(partition, None)
            self._applied.pop(partition, None)  # the new owner reads the topic's record
        self._assigned = [p for p in self._assigned if p.partition not in gone]

    # -- the loop ----------------------------------------------------------------------

    def _clients(self) -> tuple[Consumer, Producer | None]:
        bootstrap = self.config.kafka.bootstrap_servers
        base = client_settings(self._kafka_settings, self.kafka_health)
        consumer = Consumer(
            consumer_config(
                bootstrap,
                self.dest.consumer_group(self.name),
                extra={**base, **self.dest.consumer},
            )
        )
        producer = None
        if not self.dry_run:
            # The dead letters' overrides: an oversized malformed record is the kind that
            # is dead-lettered, above librdkafka's default 1 MB message.max.bytes.
            producer = Producer(
                producer_config(bootstrap, extra={**base, **DEAD_LETTER_PRODUCER_OVERRIDES})
            )
        return consumer, producer

    def _dead_letter_max(self) -> int:
        """The dead-letter topic's ``max.message.bytes``, which its values are cut to."""
        admin = AdminClient(admin_config(self.config.kafka.bootstrap_servers,
                                         self._kafka_settings))  # fmt: skip
        return topic_max_message_bytes(admin, self.dest.dead_letter_topic)

    def _commit(self, consumer: Consumer) -> None:
        if self.sink is None or self.dry_run:  # a dry run must not skip real delivery later
            return
        positions = self.offsets.to_commit()
        if not positions:
            return
        self.sink.dead_letters.flush()
        self.sink.acknowledged.flush()
        topic = self.config.deltas.topic
        try:
            consumer.commit(
                offsets=[TopicPartition(topic, p, o) for p, o in positions.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            log.warning("offset commit failed (will retry): %s", exc)
            return
        self.offsets.committed(positions)

    def _set_paused(self, consumer: Consumer, paused: bool) -> None:
        if paused == self._paused or not self._assigned:
            return
        (consumer.pause if paused else consumer.resume)(self._assigned)
        self._paused = paused

    # -- control -------------------------------------------------------------------

    def _apply_control(self, view: ControlView, sink: DeliverySink, *, first: bool) -> None:
        """Take a new view of the control topic: pauses at once; a changed filter or a new
        resync makes the owned partitions be compared again (:meth:`_compare_again`)."""
        previous, self.view = self.view, view
        held = (view.paused, view.paused_audiences)
        if held != (previous.paused, previous.paused_audiences) or (first and any(held)):
            log.info(  # each replica says when it took a pause or a resume
                "control topic: destination %s, paused audiences: %s",
                "paused" if view.paused else "running",
                ", ".join(sorted(view.paused_audiences)) or "none",
            )
        if first or not view.same_filter(previous):
            rollout = view.effective_rollout(self.dest.rollout)
            self.want = sink.want = DesiredFilter(
                self.routes, self.dest.holdout, rollout, view.detached, view.detached_all
            )
            if not first:
                log.info("control: the desired state changed; comparing again")
                self._replan = True
        for scope, request in view.resyncs.items():
            if not first and previous.resyncs.get(scope) != request:
                log.info("control: resync of %s requested", scope or "every audience")
                self._replan = True

    def _apply_resyncs(self, sink: DeliverySink, partitions: list[int]) -> None:
        """Apply to each of ``partitions`` the resyncs it has not applied yet (marking its
        acknowledged values pending), and record them as applied on the control topic: a
        request written while no replica ran, or before the partition came here, is
        applied by whichever replica owns the partition next."""
        if self.dry_run:  # a dry run records nothing, so it must not mark either
            return
        for partition in partitions:
            due = self.view.resyncs_due(partition, self._applied.get(partition))
            if not due:
                continue
            marked = sum(sink.acknowledged.resend([partition], scope) for scope in due)
            log.info("resync of partition %d (%s): %d acknowledged values to send again",
                     partition, ", ".join(s or "every audience" for s in due), marked)  # fmt: skip
            applied = self._applied.setdefault(partition, {})
            applied.update({scope: self.view.resyncs[scope] for scope in due})
            if self._reporter is None:
                continue
            try:
                self._reporter.write("resynced", str(partition), {
                    "applied": [[scope, request] for scope, request in applied.items()],
                })  # fmt: skip
            except KafkaUnavailable as exc:  # applied again by the next owner: harmless
                log.warning("control: resync of partition %d not recorded: %s", partition, exc)

    def _start_control(self, follower: ControlFollower, sink: DeliverySink) -> None:
        """Read the control topic before the first assignment (so a paused destination
        sends nothing), waiting for the cluster as long as the loop is asked to run."""
        while True:
            try:
                # short attempts, each followed by the clients' health: a refused
                # client (credentials) stops the loop instead of being retried for ever
                ensure_control_topic(
                    self.config, self.control_topic, _CONTROL_ATTEMPT_S, self.kafka_health
                )
                self._apply_control(follower.start(), sink, first=True)
                return
            except KafkaUnavailable as exc:
                self.kafka_health.check()
                if self._stop.is_set():
                    raise
                log.warning("control topic: %s; trying again", exc)
                if self.health is not None:
                    self.health.beat()
                self._stop.wait(1.0)

    def _compare_again(self, sink: DeliverySink) -> None:
        """Plan the owned partitions anew under the current filter (the table read again),
        once no batch is in flight (its answer is part of what is compared)."""
        if sink.sending:
            return
        numbers = self.partitions
        self._apply_resyncs(sink, numbers)
        self._replan = False
        sink.forget_repairs()
        if not numbers:
            return
        snapshot = None
        if table_partitions(self.config) is not None:
            snapshot = read_desired(self.config, numbers, self.want)
        planned = 0
        for partition in numbers:
            desired = None if snapshot is None else snapshot.partitions[partition]
            self._desired[partition] = Counter(a for a, _ in desired or ())
            repairs = plan_repairs(
                desired, sink.acknowledged.entries(partition), self.want, sink.client.identify
            )
            sink.reconcile(partition, repairs)
            planned += len(repairs)
        log.info("control: partitions %s compared again, %d to send",
                 ",".join(map(str, numbers)), planned)  # fmt: skip

    def _report(self, writer: ControlWriter, sink: DeliverySink) -> None:
        """Tell the control topic what this replica does, when that changed (for
        ``streamsync destinations status``)."""
        state = (tuple(self.partitions), sink.paused, sink.paused_audiences, sink.last_error)
        if state == self._reported:
            return
        now = time.monotonic()
        if state[:3] == self._reported[:3] and now - self._reported_at < REPORT_EVERY_S:
            return  # only the error changed: at most one report per interval
        self._reported, self._reported_at = state, now
        try:
            writer.write("replica", self.replica_id, {
                "partitions": list(state[0]), "paused": sink.paused,
                "paused_audiences": sorted(sink.paused_audiences),
                "last_error": sink.last_error, "dry_run": self.dry_run,
            })  # fmt: skip
        except KafkaUnavailable as exc:  # a report only: delivery goes on
            log.warning("control: state not reported: %s", exc)

    def run(
        self,
        *,
        duration_s: float | None = None,
        idle_timeout_s: float | None = None,
        drain_timeout_s: float = 10.0,
    ) -> DeliverResult:
        """Deliver until :meth:`stop`, ``duration_s`` elapsed, or nothing happened for
        ``idle_timeout_s``. Raises :class:`FatalDestinationError` (nothing committed past
        the failure) when the destination refuses the credentials or the URL, and
        :mod:`streamsync.kafka.health`'s errors or
        :class:`~streamsync.dead_letter.DeadLetterFailed` when Kafka fails it."""
        dest = self.dest
        consumer, producer = self._clients()
        dead_letters = DeliveryDeadLetters(
            producer,
            dest.dead_letter_topic,
            self.config.deltas.topic,
            max_bytes=None if producer is None else self._dead_letter_max(),
        )
        acknowledged = AcknowledgedState(producer, self.acknowledged_topic)
        sink = self.sink = DeliverySink(
            self.client,
            self.transport,
            dead_letters,
            self.offsets,
            retry=dest.retry,
            linger_s=dest.batching.linger_ms / 1000.0,
            max_buffered=dest.batching.max_buffered,
            holdout=dest.holdout,
            dry_run=self.dry_run,
            on_ack=self.on_ack,
            observer=self.observer,
            tracer=None if self.tracing is None else RequestTracer(self.tracing, self.client),
            acknowledged=acknowledged,
            max_in_flight=dest.batching.max_in_flight,
            want=self.want,
        )
        follower = ControlFollower(self.config, self.control_topic, self.kafka_health)
        reporter = self._reporter = ControlWriter(self.config, self.control_topic,
                                                  by=self.replica_id)  # fmt: skip
        self._start_control(follower, sink)
        keep_headers = sink.tracer is not None  # else no per-delta tracing work at all
        result = DeliverResult(self.name, sink.stats)
        started = last_activity = last_commit = last_progress = time.monotonic()
        last_size = started - SIZE_EVERY_S + 1.0  # first report once the assignment is read
        last_error = ""
        decode = self._decode
        kafka_health = self.kafka_health
        try:
            consumer.subscribe(
                [self.config.deltas.topic], on_assign=self._on_assign, on_revoke=self._on_revoke
            )
            health = self.health
            if health is not None:
                health.set_ready()  # a replica without partitions is healthy too
            while not self._stop.is_set():
                if health is not None:
                    health.beat()
                now = time.monotonic()
                if duration_s is not None and now - started >= duration_s:
                    result.stopped_by = "duration"
                    break
                view = follower.poll()
                if view is not self.view:
                    self._apply_control(view, sink, first=False)
                state = self.control.poll()  # the control file, where one is configured
                sink.paused = state.paused or view.paused
                sink.paused_audiences = state.paused_audiences | view.paused_audiences
                if self._replan:
                    self._compare_again(sink)
                self._report(reporter, sink)
                self._set_paused(consumer, sink.backpressure)
                timeout = min(0.1, max(0.0, sink.next_wakeup(now)))
                messages = consumer.consume(num_messages=_CONSUME_BATCH, timeout=timeout)
                if self._failure is not None:
                    raise self._failure
                kafka_health.check()
                for message in messages:
                    error = message.error()
                    if error is not None:
                        if error.fatal():
                            raise KafkaUnavailable(f"fatal consumer error: {error}")
                        if str(error) != last_error:  # e.g. the deltas topic does not exist
                            last_error = str(error)
                            log.warning("deltas topic: %s", error)
                        continue
                    result.consumed += 1
                    partition = cast(int, message.partition())
                    offset = cast(int, message.offset())
                    value = message.value() or b""
                    try:
                        delta = decode(value)
                    except Exception as exc:  # any undecodable record: dead-letter it
                        result.malformed += 1
                        self.offsets.track(partition, offset)
                        dead_letters.raw(
                            value, message.key(), partition, offset, type(exc).__name__
                        )
                        self.offsets.done(partition, [offset])
                        continue
                    if not self.want.routed(delta.audience):
                        result.skipped_not_routed += 1
                        self.offsets.track(partition, offset)
                        self.offsets.done(partition, [offset])
                        continue
                    kind, timestamp = message.timestamp()
                    sink.add(
                        delta,
                        partition,
                        offset,
                        timestamp if kind else None,
                        cast(ReceivedHeaders, message.headers()) if keep_headers else None,
                    )
                if messages:
                    kafka_health.outage.clear()
                before = sink.stats.requests + sink.stats.dry_run_requests
                sink.pump()
                if (
                    messages
                    or sink.stats.requests + sink.stats.dry_run_requests != before
                    or not self._assigned  # idle counts once partitions are assigned,
                ):  # as evaluate's and ingest's do: joining the group is no idleness
                    last_activity = time.monotonic()
                now = time.monotonic()
                if now - last_commit >= COMMIT_INTERVAL_S:
                    self._commit(consumer)
                    last_commit = now
                if now - last_size >= SIZE_EVERY_S:
                    last_size = now
                    sink.report_sizes(sum(self._desired.values(), Counter()))
                if self.progress is not None and now - last_progress >= self.progress_interval_s:
                    last_progress = now
                    result.elapsed_s = now - started
                    self.progress(result, sink)
                if (
                    idle_timeout_s is not None
                    and sink.idle
                    and now - last_activity >= idle_timeout_s
                ):
                    result.stopped_by = "idle_timeout"
                    break
            else:
                result.stopped_by = "stop"
            sink.flush(drain_timeout_s)  # what remains is re-read by the next run
            self._commit(consumer)
        except FatalDestinationError as exc:
            result.error = str(exc)
            raise
        except KafkaException as exc:  # a client call failed for good
            raise KafkaUnavailable(f"Kafka error: {exc}") from exc
        finally:
            result.elapsed_s = time.monotonic() - started
            result.dead_letters = dead_letters.written
            with contextlib.suppress(KafkaException):
                consumer.close()
            with contextlib.suppress(KafkaException, KafkaUnavailable):
                reporter.write("replica", self.replica_id, None)  # stopped
            reporter.close()
            follower.close()
            if producer is not None:
                producer.flush(5)
            sink.close()
            self.transport.close()
        return result


def run_delivery(
    config: AppConfig,
    names: list[str] | None = None,
    *,
    duration_s: float,
    idle_timeout_s: float | None = None,
    env: Mapping[str, str] | None = None,
    progress: Callable[[DeliverResult, DeliverySink], None] | None = None,
    progress_interval_s: float = 10.0,
) -> dict[str, DeliverResult]:
    """Run delivery to ``names`` (default: every configured destination) side by side for
    at most ``duration_s`` (or until each was idle ``idle_timeout_s``); return each
    destination's counts. A destination that failed has ``error`` set. ``progress`` is
    called from each destination's own thread."""
    loops = [
        DeliverLoop(
            config, name, env=env, progress=progress, progress_interval_s=progress_interval_s
        )
        for name in (names or list(config.destinations))
    ]
    results: dict[str, DeliverResult] = {}

    def work(loop: DeliverLoop) -> None:
        try:
            results[loop.name] = loop.run(duration_s=duration_s, idle_timeout_s=idle_timeout_s)
        except StreamsyncError as exc:
            stats = loop.sink.stats if loop.sink is not None else SinkStats()
            results[loop.name] = DeliverResult(loop.name, stats, error=str(exc))

    threads = [threading.Thread(target=work, args=(loop,), daemon=True) for loop in loops]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results
