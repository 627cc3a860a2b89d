"""Deliver continues each delta's trace: the destination request's span links to the
W3C trace context that evaluate wrote in the delta record's Kafka headers."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from streamsync.config import load_config
from streamsync.deltas.codec import encode_json
from streamsync.deltas.record import MembershipDelta
from streamsync.destinations.client import Change
from streamsync.destinations.deliver import DeliverLoop
from streamsync.dev.standins import StandInAdmin, StandInServer
from streamsync.observability.tracing import Tracing
from tests.destinations.conftest import BRAZE_KEY, delta
from tests.destinations.helpers import write_config

pytestmark = pytest.mark.kafka


def _traceparent(trace_id: int, span_id: int, sampled: bool) -> bytes:
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}".encode()


def _produce(
    bootstrap: str, topic: str, records: list[tuple[MembershipDelta, bytes | None]]
) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for d, traceparent in records:
        headers = [("content-type", b"application/json")]
        if traceparent is not None:
            headers.append(("traceparent", traceparent))
        producer.produce(topic, key=d.customer_id.encode(), value=encode_json(d), headers=headers)
    producer.flush(10)


def _loop(
    tmp_path: Path, bootstrap: str, topic: str, standins: StandInServer, tracing: Tracing,
    acked: list[Change], **settings: object,
) -> DeliverLoop:  # fmt: skip
    path = write_config(
        tmp_path / "c.yaml", bootstrap, topic,
        {"braze": {"kind": "braze", "base_url": standins.urls["braze"],
                   "credentials": {"env": "K1"}, "dead_letter_topic": f"{topic}-dlq",
                   "group_id": f"tr-{uuid.uuid4().hex[:8]}",
                   "rate_limit": {"limit": 50, "window_s": 1.0}, **settings}},
    )  # fmt: skip
    return DeliverLoop(
        load_config(path, env={}), "braze", env={"K1": BRAZE_KEY}, tracing=tracing,
        on_ack=lambda changes, _now: acked.extend(changes),
    )  # fmt: skip


def test_request_spans_link_to_every_delta_trace(
    tmp_path: Path, kafka_bootstrap_servers: str, new_topic: Callable[..., str],
    standins: StandInServer,
) -> None:  # fmt: skip
    topic = new_topic("deltas-traced")
    traces = {f"c{i}": 0xA0000000000000000000000000000000 + i for i in range(5)}
    records: list[tuple[MembershipDelta, bytes | None]] = [
        # evaluate without an OTLP endpoint forwards sampled=0: still linked
        (delta(c, "ACT__A", "enter"), _traceparent(t, 0xB0 + i, sampled=i % 2 == 0))
        for i, (c, t) in enumerate(traces.items())
    ]
    # a later delta of c0 collapses into the same change: both of its traces are linked
    later = 0xC0000000000000000000000000000000
    records.append((delta("c0", "ACT__A", "exit", seq=2), _traceparent(later, 0xD0, True)))
    # ... and c0 enters again, so the net change is sent (an exit alone of a value never
    # acknowledged would send nothing, and link nothing)
    again = 0xE0000000000000000000000000000000
    records.append((delta("c0", "ACT__A", "enter", seq=3), _traceparent(again, 0xE0, True)))
    records.append((delta("untraced", "ACT__A", "enter"), None))
    _produce(kafka_bootstrap_servers, topic, records)

    exporter = InMemorySpanExporter()
    tracing = Tracing(role="deliver", exporter=exporter)
    acked: list[Change] = []
    loop = _loop(tmp_path, kafka_bootstrap_servers, topic, standins, tracing, acked)
    result = loop.run(duration_s=60, idle_timeout_s=2)
    assert result.consumed == len(records)
    assert tracing.flush()
    spans = [s for s in exporter.get_finished_spans() if s.name == "deliver braze"]
    assert spans, "no request span recorded"
    linked: dict[int, bool] = {}
    for span in spans:
        assert span.kind is SpanKind.CLIENT
        assert span.parent is None  # a root of its own, sampled by deliver's ratio
        assert span.status.status_code is not StatusCode.ERROR
        assert span.attributes is not None
        assert 200 <= int(span.attributes["http.response.status_code"]) < 300  # type: ignore[arg-type]
        assert span.attributes["streamsync.destination"] == "braze"
        assert span.attributes["streamsync.linked_traces"] == len(span.links)
        for link in span.links:
            linked[link.context.trace_id] = link.context.trace_flags.sampled
    assert set(linked) == {*traces.values(), later, again}
    assert linked[traces["c1"]] is False and linked[traces["c0"]] is True
    # collapsed or not, c0's three deltas each kept their headers
    assert sum(len(c.traces or ()) for c in acked if c.customer_id == "c0") == 3
    # no faults, so one attempt per request: each delta is counted by exactly one span
    assert sum(int(s.attributes["streamsync.deltas"]) for s in spans if s.attributes) == len(
        records
    )
    tracing.shutdown()


def test_each_attempt_is_a_span_and_failures_name_only_their_class(
    tmp_path: Path, kafka_bootstrap_servers: str, new_topic: Callable[..., str],
    standins: StandInServer,
) -> None:  # fmt: skip
    topic = new_topic("deltas-retried")
    trace_id = 0x1234567890ABCDEF1234567890ABCDEF
    _produce(
        kafka_bootstrap_servers, topic,
        [(delta("c1", "ACT__A", "enter"), _traceparent(trace_id, 0x42, sampled=False))],
    )  # fmt: skip
    StandInAdmin(standins.urls["braze"]).faults(status_burst={"count": 2, "status": 503})
    exporter = InMemorySpanExporter()
    tracing = Tracing(role="deliver", exporter=exporter)
    acked: list[Change] = []
    loop = _loop(
        tmp_path, kafka_bootstrap_servers, topic, standins, tracing, acked,
        retry={"initial_backoff_s": 0.01, "max_backoff_s": 0.05},
    )  # fmt: skip
    result = loop.run(duration_s=60, idle_timeout_s=2)
    assert result.stats.delivered_total == 1 and result.stats.retries == 2
    assert tracing.flush()
    spans = [s for s in exporter.get_finished_spans() if s.name == "deliver braze"]
    statuses = [s.attributes["http.response.status_code"] for s in spans if s.attributes]
    assert statuses[:2] == [503, 503] and 200 <= int(statuses[2]) < 300  # type: ignore[arg-type]
    assert len(spans) == 3
    for failed in spans[:2]:
        assert failed.status.status_code is StatusCode.ERROR
        assert failed.status.description == "RetriableError"  # not the vendor's body
    assert spans[2].status.status_code is not StatusCode.ERROR
    assert all([link.context.trace_id for link in s.links] == [trace_id] for s in spans)
    tracing.shutdown()


def test_without_export_deliver_keeps_no_headers(
    tmp_path: Path, kafka_bootstrap_servers: str, new_topic: Callable[..., str],
    standins: StandInServer,
) -> None:  # fmt: skip
    topic = new_topic("deltas-untraced")
    _produce(
        kafka_bootstrap_servers, topic,
        [(delta(f"c{i}", "ACT__A", "enter"), _traceparent(0xE0 + i, 0xF0, True)) for i in range(3)],
    )  # fmt: skip
    tracing = Tracing(role="deliver")  # no exporter: an always-off sampler
    acked: list[Change] = []
    loop = _loop(tmp_path, kafka_bootstrap_servers, topic, standins, tracing, acked)
    result = loop.run(duration_s=60, idle_timeout_s=2)
    assert result.stats.delivered_total == 3
    assert loop.sink is not None and loop.sink.tracer is None
    assert len(acked) == 3 and all(c.traces is None for c in acked)
    tracing.shutdown()
