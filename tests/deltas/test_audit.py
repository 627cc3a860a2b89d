"""Live explain on the real broker: ``streamsync explain --config`` reads the deltas the
evaluate service wrote (JSON and Avro) and the records behind them, and prints the same
timeline as file-mode explain over the same records."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streamsync.cli import main
from streamsync.config import load_config
from streamsync.deltas.audit import AuditProgress, audit_customer, prefilter_needle
from streamsync.deltas.record import MembershipDelta, format_rfc3339_ms
from streamsync.ingest.avro import confluent_frame, encode_avro
from streamsync.ingest.decoder import Decoder
from streamsync.ingest.event import Event
from streamsync.resources import project_path
from streamsync.runtime.app import Application
from tests.runtime.evaluate_support import EXAMPLE_AUDIENCES, Stream, replay_deltas, synthetic

pytestmark = pytest.mark.kafka

_POSITION = re.compile(r"\((?P<where>[^,]+), record (?P<rid>[^,)]+)")


@dataclass
class Run:
    stream: Stream
    configs: dict[str, Path]  # deltas format -> configuration file
    events: Path
    until: str
    #: customers by number of deltas, most first
    customers: list[str]


def _with_deltas(path: Path, fmt: str, topic: str) -> None:
    config: dict[str, Any] = orjson.loads(path.read_bytes())
    config["deltas"] = {"topic": topic, "format": fmt}
    path.write_bytes(orjson.dumps(config))


@pytest.fixture(scope="module")
def run(kafka_bootstrap_servers: str, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Synthetic traffic on co-partitioned topics, evaluated to completion twice: deltas
    as JSON and as Confluent-framed Avro."""
    tmp = tmp_path_factory.mktemp("audit")
    stream = Stream(kafka_bootstrap_servers)
    stream.produce(synthetic(60, 2500, seed=5))
    configs = {}
    for fmt in ("json", "avro"):
        path = stream.config(tmp, fmt, group_id=f"{stream.group}-{fmt}")
        _with_deltas(path, fmt, f"{stream.deltas}.{fmt}")
        Application(load_config(path)).run(idle_timeout_s=2.0)
        configs[fmt] = path
    until = format_rfc3339_ms(int(time.time() * 1000))
    events = tmp / "events.jsonl"
    events.write_bytes(b"\n".join(stream.lines) + b"\n")
    counts = Counter(d.customer_id for d in replay_deltas(stream.lines))
    return Run(stream, configs, events, until, [c for c, _ in counts.most_common()])


def explain(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    capsys.readouterr()
    rc = main(["explain", *args])
    captured = capsys.readouterr()
    return rc, captured.out.splitlines(), captured.err


def file_explain(capsys: pytest.CaptureFixture[str], run: Run, *args: str) -> list[str]:
    rc, out, _ = explain(
        capsys,
        *("--audiences", str(EXAMPLE_AUDIENCES), "--events", str(run.events)),
        *("--until", run.until, *args),
    )
    assert rc == 0
    return out


def live_parts(lines: list[str]) -> tuple[list[str], list[str]]:
    """A live answer's current memberships (the lines before the timeline's header) and
    the rest, which is what file mode prints."""
    header = next(i for i, line in enumerate(lines) if line.startswith("customer "))
    return lines[:header], lines[header:]


def members_now(block: list[str]) -> list[str]:
    """The audiences a live answer's first lines name as current memberships."""
    assert block[0].startswith("member now (") and "unknown" not in block[0], block
    return [line.split()[0] for line in block[1:]]


def timeline(lines: list[str]) -> list[str]:
    """The lines after the header, with where each record was found left out."""
    return [_POSITION.sub(r"(@, record \g<rid>", line) for line in lines[1:]]


def input_records(run: Run) -> dict[tuple[str, int, int], tuple[bytes | None, bytes | None]]:
    """Every input record by (topic, partition, offset): its key and value."""
    stream = run.stream
    ends = stream.end_offsets()
    consumer = Consumer(
        {"bootstrap.servers": stream.bootstrap, "group.id": "unused", "enable.auto.commit": False}
    )
    out: dict[tuple[str, int, int], tuple[bytes | None, bytes | None]] = {}
    try:
        consumer.assign([TopicPartition(t, p, 0) for (t, p), end in ends.items() if end])
        deadline = time.monotonic() + 30
        while len(out) < sum(ends.values()) and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                if message.error() is None:
                    where = (message.topic() or "", message.partition() or 0, message.offset() or 0)
                    out[where] = (message.key(), message.value())
    finally:
        consumer.close()
    return out


def check_positions(run: Run, lines: list[str]) -> int:
    """Every record a live timeline names is at the topic/partition/offset it gives;
    the number of records checked."""
    ingest = load_config(run.configs["json"]).ingest
    decoders = {topic.name: Decoder(topic) for topic in ingest.topics}
    records = input_records(run)
    checked = 0
    for where, rid in {m.groups() for line in lines if (m := _POSITION.search(line))}:
        found = re.fullmatch(r"(.+)\[(\d+)\]@(\d+)", where)
        assert found is not None, where
        topic = found[1]
        key, value = records[(topic, int(found[2]), int(found[3]))]
        outcomes = decoders[topic].decode_all(value, key, None)
        assert rid in [e.record_id for e in outcomes if isinstance(e, Event)]
        checked += 1
    return checked


@pytest.mark.parametrize("fmt", ["json", "avro"])
def test_live_explain_prints_the_file_timeline_with_its_records(
    run: Run, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    for customer in run.customers[:2]:
        expected = file_explain(capsys, run, "--customer", customer)
        rc, live, _ = explain(capsys, "--config", str(run.configs[fmt]), "--customer", customer)
        assert rc == 0
        block, live = live_parts(live)
        changes = sum(1 for line in expected if " ENTER " in line or " EXIT " in line)
        assert changes >= 20
        assert timeline(live) == timeline(expected)
        # The membership table agrees with the timeline's end.
        assert block[0] == f"member now ({run.stream.deltas}.{fmt}.members): " + (
            f"{len(block) - 1} audience(s)" if len(block) > 1 else "no audience"
        )
        now = live[-1].removeprefix("member now of: ")
        assert (", ".join(members_now(block)) or "nothing") == now
        header = live[0]
        assert header.startswith(f"customer {customer}: {changes} change(s) in ")
        # Every qualifying record was found, at its place on the input topics.
        assert not any(line.startswith("    record ") for line in live)
        wanted = len({m["rid"] for line in live if (m := _POSITION.search(line))})
        assert f"; {wanted} of {wanted} qualifying record(s) found in " in header
        if fmt == "json":
            assert check_positions(run, live) == wanted


def test_live_explain_of_one_audience(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    customer = run.customers[0]
    audience = "ACT__CartAbandon__90m"
    expected = file_explain(capsys, run, "--customer", customer, "--audience", audience)
    rc, live, _ = explain(
        capsys,
        *("--config", str(run.configs["json"]), "--customer", customer, "--audience", audience),
    )
    assert rc == 0
    block, live = live_parts(live)
    assert timeline(live) == timeline(expected)
    member = live[-1] == f"member now of: {audience}"
    assert members_now(block) == ([audience] if member else [])
    assert member or block == [f"member now ({run.stream.deltas}.json.members): not of {audience}"]
    assert any(audience in line for line in live[1:-1])
    assert all(audience in line for line in live[1:-1] if "ENTER" in line or "EXIT" in line)


def test_a_customer_without_deltas_never_entered(
    run: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, live, _ = explain(
        capsys, "--config", str(run.configs["json"]), "--customer", "nobody-at-all"
    )
    assert rc == 0
    assert live == [
        f"member now ({run.stream.deltas}.json.members): no audience",
        f"customer nobody-at-all: 0 change(s) in {run.stream.deltas}.json; 0 of 0 qualifying "
        f"record(s) found in {run.stream.pipelines}, {run.stream.webhooks}",
        "  never entered any audience",
        "member now of: nothing",
    ]


def test_max_records_bounds_the_scan_and_says_what_was_not_found(
    run: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    customer = run.customers[0]
    rc, live, _ = explain(
        capsys,
        *("--config", str(run.configs["json"]), "--customer", customer, "--max-records", "1"),
    )
    assert rc == 0
    missing = [line for line in live if line.startswith("    record ")]
    assert missing and all(line.endswith("(not found in the first 1 records)") for line in missing)
    # The changes themselves are all there.
    expected = file_explain(capsys, run, "--customer", customer)
    changes = [line for line in expected if " ENTER " in line or " EXIT " in line]
    assert [line for line in live if " ENTER " in line or " EXIT " in line] == changes


def test_an_unknown_partitioner_reads_every_partition_and_finds_the_same(run: Run) -> None:
    config = load_config(run.configs["json"])
    customer = run.customers[1]
    known = audit_customer(config, customer, timeout_s=60)
    assert len(known.partitions) == 1
    seen: list[AuditProgress] = []
    kafka = config.kafka.model_copy(update={"extra": {"partitioner": "random"}})
    anywhere = audit_customer(
        config.model_copy(update={"kafka": kafka}),
        customer,
        timeout_s=60,
        progress=seen.append,
        progress_interval_s=0.0,
    )
    assert anywhere.partitions == list(range(run.stream.partitions))
    assert anywhere.deltas_read > known.deltas_read
    assert [d.to_json() for d in anywhere.deltas] == [d.to_json() for d in known.deltas]
    assert anywhere.records.keys() == known.records.keys() and known.records
    assert not known.not_found and known.stopped_by is None
    assert {p.phase for p in seen} == {"deltas", "records"}
    assert all(p.found <= p.wanted == len(anywhere.wanted) for p in seen if p.phase == "records")


# ----------------------------------------------------------------------- user mistakes


def _cli(*args: str, bootstrap: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    return subprocess.run(
        [sys.executable, "-m", "streamsync", "explain", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _one_line(result: subprocess.CompletedProcess[str], rc: int, *needles: str) -> None:
    assert result.returncode == rc, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("streamsync explain: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert result.stdout == ""


def test_an_unreachable_broker_is_one_line_and_exit_1(run: Run) -> None:
    result = _cli(
        *("--config", str(run.configs["json"]), "--customer", "c1", "--timeout", "3"),
        bootstrap="127.0.0.1:1",
    )
    _one_line(result, 1, "cannot reach Kafka at 127.0.0.1:1")
    assert "%3|" not in result.stderr and "Traceback" not in result.stderr


def test_a_missing_configuration_file_is_a_usage_error(tmp_path: Path) -> None:
    result = _cli(
        "--config", str(tmp_path / "nope.yaml"), "--customer", "c1", bootstrap="127.0.0.1:1"
    )
    _one_line(result, 2, "nope.yaml")


def test_an_unknown_audience_is_a_usage_error(run: Run) -> None:
    result = _cli(
        *("--config", str(run.configs["json"]), "--customer", "c1"),
        *("--audience", "ACT__NoSuch__1d"),
        bootstrap=run.stream.bootstrap,
    )
    _one_line(result, 2, "no audience named 'ACT__NoSuch__1d'")


def test_without_the_membership_table_the_timeline_is_still_explained(
    run: Run, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A deployment whose evaluate has not created the table yet (an older version)."""
    path = tmp_path / "config.json"
    config: dict[str, Any] = orjson.loads(run.configs["json"].read_bytes())
    config["deltas"]["members_topic"] = f"{run.stream.deltas}.never-written"
    path.write_bytes(orjson.dumps(config))
    customer = run.customers[0]
    rc, live, _ = explain(capsys, "--config", str(path), "--customer", customer)
    assert rc == 0
    assert live[0] == (
        f"member now ({run.stream.deltas}.never-written): unknown, the topic does not exist "
        "(evaluate creates it when it starts)"
    )
    expected = file_explain(capsys, run, "--customer", customer)
    assert timeline(live[1:]) == timeline(expected)


def test_a_missing_deltas_topic_is_a_usage_error(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(run.configs["json"].read_bytes())
    _with_deltas(path, "json", f"{run.stream.deltas}.never-written")
    result = _cli("--config", str(path), "--customer", "c1", bootstrap=run.stream.bootstrap)
    _one_line(result, 2, f"deltas topic {run.stream.deltas}.never-written does not exist")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--customer", "c1"], "give --config FILE"),
        (["--customer", "c1", "--events", "x.jsonl"], "--audiences and --events go together"),
        (["--customer", "c1", "--config", "c.yaml", "--audiences", "a"], "go together"),
        (
            ["--customer", "c1", "--audiences", "a", "--events", "e", "--max-records", "5"],
            "--max-records and --timeout apply when reading Kafka",
        ),
        (
            ["--customer", "c1", "--config", "c.yaml", "--until", "2026-01-01T00:00:00Z"],
            "--until and --allowed-lateness apply to a file",
        ),
    ],
)
def test_the_two_modes_do_not_mix(
    capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    rc, out, err = explain(capsys, *args)
    assert rc == 2 and out == []
    assert err.count("\n") == 1 and err.startswith("streamsync explain: ") and needle in err


# ------------------------------------------------- hand-made deltas, other input formats


def _track(customer: str, rid: str, event: str, ms: int) -> dict[str, Any]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"
    return {
        "type": "track",
        "messageId": rid,
        "userId": customer,
        "event": event,
        "timestamp": stamp,
        "properties": {"note": "customer ids of others appear in no field"},
    }


@pytest.mark.parametrize(
    ("fmt", "customer"),
    [("pipelines_avro", "cus_avro_1"), ("pipelines_json", 'team/"quoted"\\id')],
    ids=["avro-input", "json-id-the-prefilter-cannot-use"],
)
def test_qualifying_records_are_found_on_avro_topics_and_for_any_id(
    kafka_bootstrap_servers: str,
    new_topic: Any,
    tmp_path: Path,
    fmt: str,
    customer: str,
) -> None:
    """Deltas produced here name two of the customer's records among other customers'
    records; both are found, at their offsets, whatever the encoding or the id."""
    inputs, deltas = new_topic("audit-in", partitions=2), new_topic("audit-deltas", partitions=3)
    avro = fmt.endswith("_avro")

    def encode(record: dict[str, Any]) -> bytes:
        return (
            confluent_frame(1, encode_avro("pipelines", record)) if avro else orjson.dumps(record)
        )

    base = int(time.time() * 1000) - 3_600_000
    records = [_track(f"other-{n % 7}", f"o-{n}", "Product Viewed", base + n) for n in range(60)]
    records[20:20] = [_track(customer, "q-1", "Product Added", base + 100)]
    records[45:45] = [_track(customer, "q-2", "Order Completed", base + 200)]
    records.append(_track(customer, "q-3", "Product Viewed", base + 300))
    producer = Producer({"bootstrap.servers": kafka_bootstrap_servers})
    for record in records:
        producer.produce(inputs, encode(record), str(record["userId"]).encode())
    change = MembershipDelta("ACT__X__1d", 1, customer, "enter", base + 200, 1, ["q-1", "q-2"])
    producer.produce(deltas, orjson.dumps(change.to_json()), customer.encode())
    other = MembershipDelta("ACT__X__1d", 1, "other-1", "enter", base + 50, 1, ["o-1"])
    producer.produce(deltas, orjson.dumps(other.to_json()), b"other-1")
    assert producer.flush(30) == 0
    topic: dict[str, Any] = {"name": inputs, "format": fmt}
    ingest: dict[str, Any] = {"topics": [topic]}
    if avro:
        topic["framing"] = "confluent"
        ingest["schema_registry_dir"] = str(project_path("schemas", "registry"))
    path = tmp_path / "config.json"
    kafka = {"bootstrap_servers": kafka_bootstrap_servers}
    path.write_bytes(orjson.dumps({"kafka": kafka, "ingest": ingest, "deltas": {"topic": deltas}}))
    audit = audit_customer(load_config(path), customer, timeout_s=60)
    assert [d.to_json() for d in audit.deltas] == [change.to_json()]
    assert audit.stopped_by is None and not audit.not_found
    assert {rid: e.name for rid, e in audit.records.items()} == {
        "q-1": "Product Added",
        "q-2": "Order Completed",
    }
    for event in audit.records.values():
        assert event.customer_id == customer
        assert event.source is not None and event.source.topic == inputs


def test_a_timeout_while_reading_the_deltas_is_exit_1_with_what_was_read(
    run: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, live, err = explain(
        capsys,
        *("--config", str(run.configs["json"]), "--customer", run.customers[0]),
        *("--timeout", "0.001"),
    )
    assert rc == 1
    assert live[0].startswith(f"member now ({run.stream.deltas}.json.members): ")
    assert live_parts(live)[1][0].startswith(f"customer {run.customers[0]}: ")
    assert err.splitlines()[-1].startswith("streamsync explain: timed out reading ")
    assert "Traceback" not in err


def test_the_prefilter_is_used_only_for_ids_json_writes_as_they_are() -> None:
    assert prefilter_needle("cus_0000042") == b"cus_0000042"
    assert prefilter_needle("user@example.com") == b"user@example.com"
    for escaped in ("a/b", 'a"b', "a\\b", "ünï", "tab\there", ""):
        assert prefilter_needle(escaped) is None
