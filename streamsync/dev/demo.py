"""The end-to-end demo on the local default: real Kafka, synthetic Customer.io traffic,
the example audiences, and a check that the live run equals an offline replay.

Steps (each reported on the output stream):

1. Kafka: ``KAFKA_BOOTSTRAP_SERVERS`` if set, else a local broker fetched from Maven
   Central and started on loopback (stopped again at the end).
2. Generate a seeded D2C stream and produce it, keyed by customer, to three topics:
   Data Pipelines JSON, reporting-webhook JSON, and Confluent-framed Avro (for a tenth
   of the customers), with malformed records mixed in.
3. Run the evaluate application (the same object ``streamsync evaluate`` runs: tasks per
   partition, persistent state, exactly-once deltas topic) until the topics are drained,
   then fire every deadline up to the newest record; read the deltas back from the
   deltas topic as a ``read_committed`` consumer would.
4. Deliver the deltas topic to local Braze and MoEngage stand-ins (started in this
   process on free loopback ports; destination settings from
   ``examples/config/deliver-local.yaml``), both at once, until idle. Evaluate and
   both deliveries run in this process and serve no admin port (the examples'
   ``admin_port`` settings are for separate processes), so nothing here can clash with
   a streamsync already running on the machine.
5. Replay the same records offline and compare: the deltas must be identical, and so
   must every stand-in profile's memberships, what replay says it should hold and what
   the membership table (what deliver reconciles to) says.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streamsync.audiences.loader import load_audiences
from streamsync.audiences.replay import replay
from streamsync.config import AppConfig, load_config
from streamsync.deltas.codec import decode_json
from streamsync.deltas.config import DeltasConfig
from streamsync.deltas.membership import Member, read_members
from streamsync.deltas.record import MembershipDelta
from streamsync.destinations.config import DestinationConfig
from streamsync.destinations.deliver import DeliverResult
from streamsync.destinations.sink import DeliverySink
from streamsync.dev.broker import kafka_bootstrap, kafka_bootstrap_from_env
from streamsync.dev.standins.compare import differences, expected_members, table_members
from streamsync.dev.standins.session import StandInDelivery, deliver_to_standins
from streamsync.dev.synthetic import generate_records, mix_bad_records
from streamsync.ingest.avro import confluent_frame, encode_avro
from streamsync.ingest.config import IngestConfig, TopicConfig
from streamsync.ingest.jsonl import is_webhook_record, read_events
from streamsync.kafka.config import KafkaConfig, consumer_config, producer_config
from streamsync.kafka.health import KafkaUnavailable
from streamsync.resources import project_path
from streamsync.runtime.app import Application, EvaluateStats
from streamsync.runtime.config import EvaluateConfig

EXAMPLE_AUDIENCES = project_path("examples", "audiences")
SCHEMA_REGISTRY = project_path("schemas", "registry")
#: The destinations' settings (identifiers, attributes, modes) the demo delivers with;
#: their URLs, keys, consumer groups and dead-letter topic are the demo's own.
DELIVERY_CONFIG = project_path("examples", "config", "deliver-local.yaml")
#: Delivery stops once idle; this bounds it should a destination never go idle.
DELIVERY_LIMIT_S = 600.0
#: Schema ids in ``schemas/registry/registry.yaml``.
PIPELINES_SCHEMA_ID = 1
PARTITIONS = 3
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


@dataclass
class DemoResult:
    """What the demo saw; ``matches_replay`` is the end-to-end correctness check."""

    produced: Counter[str] = field(default_factory=Counter)
    ingest: EvaluateStats | None = None
    dead_letters_read_back: int = 0
    deltas: list[MembershipDelta] = field(default_factory=list)
    replay_deltas: list[MembershipDelta] = field(default_factory=list)
    #: per destination name; ``None`` when delivery was skipped
    delivery: dict[str, StandInDelivery] | None = None
    #: per destination name: the memberships replay says its profiles should hold
    expected: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    #: the membership table evaluate wrote, read after delivery (what deliver reconciles to)
    table: list[Member] = field(default_factory=list)

    @property
    def matches_replay(self) -> bool:
        return _delta_keys(self.deltas) == _delta_keys(self.replay_deltas)

    @property
    def standins_match_replay(self) -> bool:
        """Every stand-in's profiles hold what replay says (true when not delivered)."""
        return self.delivery is None or all(
            d.result.error is None and not d.differences for d in self.delivery.values()
        )

    @property
    def standins_match_table(self) -> bool:
        """Every stand-in's profiles hold what the membership table says (true when not
        delivered)."""
        return self.delivery is None or all(
            d.result.error is None and not d.table_differences for d in self.delivery.values()
        )

    @property
    def passed(self) -> bool:
        return self.matches_replay and self.standins_match_replay and self.standins_match_table


def _delta_keys(deltas: list[MembershipDelta]) -> Counter[tuple[str, str, str, int, int]]:
    return Counter((d.audience, d.customer_id, d.op, d.at_ms, d.seq) for d in deltas)


def _say(out: TextIO, text: str) -> None:
    print(text, file=out, flush=True)


def _customer(record: dict[str, Any]) -> str | None:
    if is_webhook_record(record):
        data = record.get("data")
        return data.get("customer_id") if isinstance(data, dict) else None
    user = record.get("userId")
    return user if isinstance(user, str) else None


def _records(customers: int, events: int, seed: int, bad_fraction: float) -> list[Any]:
    return list(
        mix_bad_records(generate_records(customers, events, seed=seed), bad_fraction, seed=seed)
    )


def _produce(
    bootstrap: str, topics: dict[str, str], records: list[Any], out: TextIO
) -> Counter[str]:
    """Each customer's records keep their order: one key, one partition, one topic per
    record kind. A tenth of the customers send their Data Pipelines records as Avro."""
    producer = Producer(
        producer_config(
            bootstrap,
            extra={
                "linger.ms": 20,
                "message.max.bytes": MAX_MESSAGE_BYTES,
                # A fresh broker answers "coordinator load in progress" for a moment and
                # the client retries by itself: keep that warning out of the demo output.
                "log_level": 3,
            },
        )
    )
    produced: Counter[str] = Counter()
    for i, record in enumerate(records):
        if isinstance(record, bytes):
            topic, key, value = topics["json"], None, record
        else:
            customer = _customer(record)
            key = customer.encode() if customer else None
            if is_webhook_record(record):
                topic, value = topics["webhooks"], orjson.dumps(record)
            elif customer is not None and hash_bucket(customer) == 0:
                topic = topics["avro"]
                value = confluent_frame(PIPELINES_SCHEMA_ID, encode_avro("pipelines", record))
            else:
                topic, value = topics["json"], orjson.dumps(record)
        producer.produce(topic, value, key)
        produced[topic] += 1
        if i % 10_000 == 0:
            producer.poll(0)
    # Two Avro records a registry cannot serve: an unknown schema id and a cut-off body.
    sample = next(r for r in records if isinstance(r, dict) and not is_webhook_record(r))
    body = encode_avro("pipelines", sample)
    producer.produce(topics["avro"], confluent_frame(99, body))
    producer.produce(topics["avro"], confluent_frame(PIPELINES_SCHEMA_ID, body[: len(body) // 2]))
    produced[topics["avro"]] += 2
    remaining = producer.flush(60)
    if remaining:
        raise RuntimeError(f"{remaining} records were not delivered to Kafka")
    _say(out, f"      produced {sum(produced.values()):,} records")
    return produced


def hash_bucket(customer: str, buckets: int = 10) -> int:
    """A stable bucket for a customer (not ``hash()``, which is salted per process)."""
    return sum(customer.encode()) % buckets


def _create_topics(bootstrap: str, names: list[str]) -> None:
    # Errors only: on a fresh broker the client notes the requests it dropped on close.
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    # Room for the oversized record the stream contains: the topic must accept it for
    # ingest to reject it (and the dead-letter topic to keep it).
    config = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}
    futures = admin.create_topics([NewTopic(name, PARTITIONS, 1, config=config) for name in names])
    for future in futures.values():
        future.result(30)


def _count_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0) -> int:
    consumer = Consumer(consumer_config(bootstrap, f"streamsync-demo-check-{uuid.uuid4().hex}"))
    consumer.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and seen < expected:
            for message in consumer.consume(500, 0.5):
                if message.error() is None:
                    seen += 1
    finally:
        consumer.close()
    return seen


def _read_deltas(
    bootstrap: str, topic: str, expected: int, timeout_s: float = 60.0
) -> list[MembershipDelta]:
    """The deltas topic as a delivery stage sees it (``read_committed``)."""
    consumer = Consumer(consumer_config(bootstrap, f"streamsync-demo-read-{uuid.uuid4().hex}"))
    consumer.subscribe([topic])
    deltas: list[MembershipDelta] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and len(deltas) < expected:
            for message in consumer.consume(1000, 0.5):
                if message.error() is None:
                    deltas.append(decode_json(message.value() or b"{}"))
    finally:
        consumer.close()
    return deltas


def _demo_destinations(run: str) -> dict[str, DestinationConfig]:
    """The example delivery settings with this run's own dead-letter topic and no
    control file (a left-over one must not pause the demo)."""
    configured = load_config(DELIVERY_CONFIG, env={}).destinations
    update = {"dead_letter_topic": f"demo-{run}.deliver.dead-letter", "control_file": None,
              "admin_port": None}  # fmt: skip
    return {name: dest.model_copy(update=update) for name, dest in configured.items()}


def _deliver(
    config: AppConfig, run: str, idle_timeout_s: float, out: TextIO
) -> dict[str, StandInDelivery]:
    """Step 4: the deltas topic to both stand-ins at once, until both are idle."""
    destinations = _demo_destinations(run)
    _create_topics(
        config.kafka.bootstrap_servers,
        sorted({dest.dead_letter_topic for dest in destinations.values()}),
    )

    reported: dict[str, int] = {}

    def progress(state: DeliverResult, sink: DeliverySink) -> None:
        # Called from each destination's thread; a destination that is waiting says nothing.
        if reported.get(state.destination) == sink.stats.delivered_total:
            return
        reported[state.destination] = sink.stats.delivered_total
        _say(
            out,
            f"      {state.destination}: {sink.stats.delivered_total:,} changes delivered "
            f"in {sink.stats.requests:,} requests so far",
        )

    delivery = deliver_to_standins(
        config.model_copy(update={"destinations": destinations}),
        duration_s=DELIVERY_LIMIT_S,
        idle_timeout_s=idle_timeout_s,
        progress=progress,
        progress_interval_s=2.0,
    )
    for name, done in delivery.items():
        stats = done.result.stats
        outcome = f"failed: {done.result.error}" if done.result.error else "done"
        _say(
            out,
            f"      {name}: {stats.delivered_total:,} changes delivered in "
            f"{stats.requests:,} requests, {done.members:,} profiles with memberships; {outcome}",
        )
    return delivery


def _check_standins(result: DemoResult, destinations: dict[str, DestinationConfig]) -> None:
    """Fill in what each stand-in should hold after the replayed deltas, and where not."""
    assert result.delivery is not None
    for name, done in result.delivery.items():
        dest = destinations[name]
        expected = expected_members(
            result.replay_deltas, holdout=dest.holdout, suffix=dest.holdout_suffix
        )
        result.expected[name] = expected
        done.differences = differences(expected, done.memberships)
        from_table = table_members(result.table, holdout=dest.holdout, suffix=dest.holdout_suffix)
        done.table_differences = differences(from_table, done.memberships)


def run_demo(
    *,
    customers: int = 2_000,
    events: int = 50_000,
    seed: int = 1,
    bad_fraction: float = 0.002,
    idle_timeout_s: float = 5.0,
    deliver: bool = True,
    out: TextIO,
    then: Callable[[DemoResult, AppConfig], None] | None = None,
) -> DemoResult:
    """The demo (see the README); ``then``, when given, is called with the result and the
    run's configuration (its destinations included) while the broker is still up - what
    ``--console`` serves the console from until Ctrl-C."""
    result = DemoResult()
    audiences = load_audiences(EXAMPLE_AUDIENCES)
    run = uuid.uuid4().hex[:8]
    topics = {
        "json": f"demo-{run}.cio.pipelines",
        "webhooks": f"demo-{run}.cio.webhooks",
        "avro": f"demo-{run}.cio.pipelines.avro",
    }
    dead_letter_topic = f"demo-{run}.dead-letter"
    steps = 5 if deliver else 4
    external = kafka_bootstrap_from_env()
    _say(
        out,
        f"[1/{steps}] Kafka: "
        + (f"using {external}" if external else "starting a local broker (Maven Central jars)"),
    )
    with kafka_bootstrap(progress=out) as bootstrap:
        _say(out, f"      broker at {bootstrap}")
        _create_topics(bootstrap, [*topics.values(), dead_letter_topic])

        _say(
            out,
            f"[2/{steps}] Generating {events:,} Customer.io records for {customers:,} customers",
        )
        records = _records(customers, events, seed, bad_fraction)
        result.produced = _produce(bootstrap, topics, records, out)

        _say(out, f"[3/{steps}] Ingesting and evaluating {len(audiences)} audiences")
        deltas_topic = f"demo-{run}.deltas"
        with tempfile.TemporaryDirectory(prefix="streamsync-demo-state-") as state_dir:
            config = AppConfig(
                kafka=KafkaConfig(bootstrap_servers=bootstrap),
                ingest=IngestConfig(
                    topics=[
                        TopicConfig(name=topics["json"], format="pipelines_json"),
                        TopicConfig(name=topics["webhooks"], format="webhook_json"),
                        TopicConfig(
                            name=topics["avro"], format="pipelines_avro", framing="confluent"
                        ),
                    ],
                    dead_letter_topic=dead_letter_topic,
                    schema_registry_dir=SCHEMA_REGISTRY,
                ),
                deltas=DeltasConfig(topic=deltas_topic),
                # History, not live traffic: the clock is event time only, and the run
                # ends by firing every deadline up to the newest record, as replay does.
                evaluate=EvaluateConfig(
                    audiences=EXAMPLE_AUDIENCES,
                    group_id=f"streamsync-demo-{run}",
                    state_dir=Path(state_dir),
                    wall_clock=False,
                ),
            )
            app = Application(
                config,
                audiences=audiences,
                progress=lambda s: _say(
                    out, f"      {s.records:,} records, {s.deltas:,} deltas so far"
                ),
                progress_interval_s=2.0,
            )
            result.ingest = app.run(idle_timeout_s=idle_timeout_s, finish=True)
        result.deltas = _read_deltas(bootstrap, deltas_topic, result.ingest.deltas)
        result.dead_letters_read_back = _count_topic(
            bootstrap, dead_letter_topic, result.ingest.dead_lettered
        )
        if deliver:
            _say(out, "[4/5] Delivering the deltas to local Braze and MoEngage stand-ins")
            result.delivery = _deliver(config, run, idle_timeout_s, out)

        _say(
            out,
            f"[{steps}/{steps}] Replaying the same records offline to check the live result"
            + (" and the stand-ins' profiles" if deliver else ""),
        )
        # The produced records as lines of a file, through the same decoders as replay.
        lines = (r if isinstance(r, bytes) else orjson.dumps(r) for r in records)
        result.replay_deltas = list(replay(audiences, read_events(lines, "demo"), progress=None))
        if result.delivery is not None:
            table = read_members(config)
            if not table.complete:
                raise KafkaUnavailable(f"reading {table.topic} took too long")
            result.table = list(table.members.values())
            _check_standins(result, _demo_destinations(run))
        if then is not None:
            destinations = _demo_destinations(run) if deliver else {}
            then(result, config.model_copy(update={"destinations": destinations}))
    return result


def print_report(result: DemoResult, out: TextIO) -> None:
    stats = result.ingest
    assert stats is not None
    _say(out, "")
    _say(out, "Ingest, per topic")
    _say(out, f"  {'topic':<40} {'records':>9} {'decoded':>9} {'no id':>7} {'dead':>6}")
    for topic, ts in stats.topics.items():
        _say(
            out,
            f"  {topic:<40} {ts.records:>9,} {ts.decoded:>9,} "
            f"{ts.skipped_no_customer:>7,} {sum(ts.dead_lettered.values()):>6,}",
        )
    _say(
        out,
        "Dead letters, by reason (read back from the dead-letter topic: "
        f"{result.dead_letters_read_back:,} of {stats.dead_lettered:,})",
    )
    for reason, count in sorted(stats.dead_letters_by_reason.items()):
        _say(out, f"  {reason:<24} {count:>6,}")

    enters: Counter[str] = Counter()
    exits: Counter[str] = Counter()
    for delta in result.deltas:
        (enters if delta.op == "enter" else exits)[delta.audience] += 1
    _say(out, "Audiences (event time; members now = at the newest record)")
    _say(out, f"  {'audience':<36} {'enter':>7} {'exit':>7} {'members now':>12}")
    for name in sorted(enters.keys() | exits.keys()):
        _say(
            out,
            f"  {name:<36} {enters[name]:>7,} {exits[name]:>7,} {enters[name] - exits[name]:>12,}",
        )
    verdict = "identical" if result.matches_replay else "DIFFERENT"
    _say(
        out,
        f"Live deltas vs offline replay: {verdict} "
        f"({len(result.deltas):,} live, {len(result.replay_deltas):,} replayed)",
    )
    if result.delivery is not None:
        print_delivery_report(result, out)


def print_delivery_report(result: DemoResult, out: TextIO) -> None:
    """Per destination: what was delivered, audience sizes in the stand-ins against
    replay, and the final check."""
    delivery = result.delivery
    assert delivery is not None
    names = sorted(delivery)
    _say(out, "Delivery to the local stand-ins, per destination")
    _say(
        out,
        f"  {'destination':<12} {'deltas':>8} {'changes':>8} {'requests':>9} {'per req':>8} "
        f"{'429s':>5} {'retries':>8} {'dead':>5} {'profiles':>9} {'over limit':>11}",
    )
    for name in names:
        done = delivery[name]
        stats = done.result.stats
        per_request = stats.objects / stats.requests if stats.requests else 0.0
        _say(
            out,
            f"  {name:<12} {done.result.consumed:>8,} {stats.delivered_total:>8,} "
            f"{stats.requests:>9,} {per_request:>8.1f} {stats.rate_limited:>5,} "
            f"{stats.retries:>8,} {done.result.dead_letters:>5,} {done.members:>9,} "
            f"{len(done.violations):>11,}",
        )
    for note in (
        "changes: acknowledged by the destination, after each batch folded a customer's",
        "  deltas for one audience into their net effect; per req: objects per request;",
        "  over limit: requests the stand-in recorded beyond a documented limit",
    ):
        _say(out, f"  {note}")
    sizes = {n: Counter(a for m in delivery[n].memberships.values() for a in m) for n in names}
    # What replay says each should hold; one column when every destination expects the same.
    wanted = {n: Counter(a for m in result.expected.get(n, {}).values() for a in m) for n in names}
    same = all(w == wanted[names[0]] for w in wanted.values())
    replay_columns = (
        {"replay": wanted[names[0]]} if same else {f"{n} replay": wanted[n] for n in names}
    )
    columns = {**sizes, **replay_columns}
    _say(out, "Audience sizes in the stand-ins (members now) and what replay says")
    _say(out, f"  {'audience':<36}" + "".join(f" {c:>15}" for c in columns))
    for audience in sorted(set().union(*columns.values())):
        _say(out, f"  {audience:<36}" + "".join(f" {c[audience]:>15,}" for c in columns.values()))
    verdict = "identical" if result.standins_match_replay else "DIFFERENT"
    counts = ", ".join(f"{name} {delivery[name].members:,}" for name in names)
    _say(out, f"Stand-in profiles vs offline replay: {verdict} (profiles: {counts})")
    for name in names:
        done = delivery[name]
        if done.result.error:
            _say(out, f"  {name}: delivery failed: {done.result.error}")
        for line in done.differences:
            _say(out, f"  {name}: {line}")
    verdict = "identical" if result.standins_match_table else "DIFFERENT"
    _say(
        out,
        f"Stand-in profiles vs the membership table: {verdict} "
        f"({len(result.table):,} current members in the table)",
    )
    for name in names:
        for line in delivery[name].table_differences:
            _say(out, f"  {name}: {line}")
