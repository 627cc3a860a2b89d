"""Trace context carried in Kafka headers, and spans exported over OTLP only when configured."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.trace import SpanKind

from streamsync.observability.tracing import (
    Tracing,
    extract_trace_context,
    inject_trace_context,
)

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C


def _context_of(headers: list[tuple[str, bytes]]) -> trace.SpanContext:
    return trace.get_current_span(extract_trace_context(headers)).get_span_context()


def test_headers_round_trip() -> None:
    incoming = [("content-type", b"application/json"), ("traceparent", TRACEPARENT.encode())]
    context = extract_trace_context(incoming)
    span_context = trace.get_current_span(context).get_span_context()
    assert span_context.trace_id == TRACE_ID
    assert span_context.span_id == 0xB7AD6B7169203331
    assert span_context.trace_flags.sampled

    out = inject_trace_context([("streamsync.source.topic", b"cio.pipelines")], context)
    assert out[0] == ("streamsync.source.topic", b"cio.pipelines")
    assert dict(out)["traceparent"] == TRACEPARENT.encode()
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in out)
    # Injecting again replaces the context instead of adding a second traceparent.
    inject_trace_context(out, context)
    assert [k for k, _ in out].count("traceparent") == 1


def test_missing_or_broken_headers_give_an_empty_context() -> None:
    for headers in (None, [], [("traceparent", b"garbage")], [("traceparent", None)]):
        assert not _context_of(headers or []).is_valid  # type: ignore[arg-type]
    assert inject_trace_context(None, extract_trace_context(None)) == []


def test_without_export_the_upstream_trace_still_flows() -> None:
    tracing = Tracing(role="evaluate")
    assert not tracing.exporting
    with tracing.span("streamsync.evaluate", headers=[("traceparent", TRACEPARENT.encode())]):
        out = tracing.headers()
    produced = _context_of(out)
    assert produced.trace_id == TRACE_ID  # same trace...
    assert produced.span_id != 0xB7AD6B7169203331  # ...continued by our own span
    tracing.shutdown()


class _Collector(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _CollectorHandler)
        self.requests: list[ExportTraceServiceRequest] = []


class _CollectorHandler(http.server.BaseHTTPRequestHandler):
    server: _Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.server.requests.append(request)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[_Collector]:
    server = _Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_record_is_followed_from_ingest_to_the_destination_over_otlp(
    collector: _Collector,
) -> None:
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}/v1/traces"
    evaluate = Tracing.otlp(endpoint, role="evaluate")
    deliver = Tracing.otlp(endpoint, role="deliver")
    # evaluate consumes a record produced with a trace context and writes a delta.
    with evaluate.span(
        "streamsync.evaluate",
        headers=[("traceparent", TRACEPARENT.encode())],
        kind=SpanKind.CONSUMER,
        attributes={"messaging.destination.name": "cio.pipelines"},
    ):
        delta_headers = evaluate.headers([("streamsync.audience", b"SUP__Winback")])
    # deliver consumes the delta and calls the destination.
    with (
        deliver.span("streamsync.deliver", headers=delta_headers, kind=SpanKind.CONSUMER),
        deliver.span("POST /users/track", kind=SpanKind.CLIENT),
    ):
        pass
    assert evaluate.flush() and deliver.flush()
    spans = {
        span.name: (resource.resource, span)
        for request in collector.requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    }
    assert set(spans) == {"streamsync.evaluate", "streamsync.deliver", "POST /users/track"}
    trace_ids = {int.from_bytes(span.trace_id, "big") for _, span in spans.values()}
    assert trace_ids == {TRACE_ID}
    _, evaluated = spans["streamsync.evaluate"]
    _, delivered = spans["streamsync.deliver"]
    _, request = spans["POST /users/track"]
    assert evaluated.parent_span_id == bytes.fromhex("b7ad6b7169203331")
    assert delivered.parent_span_id == evaluated.span_id
    assert request.parent_span_id == delivered.span_id
    roles = {
        name: {a.key: a.value.string_value for a in resource.attributes}["streamsync.role"]
        for name, (resource, _) in spans.items()
    }
    assert roles == {
        "streamsync.evaluate": "evaluate",
        "streamsync.deliver": "deliver",
        "POST /users/track": "deliver",
    }
    evaluate.shutdown()
    deliver.shutdown()
