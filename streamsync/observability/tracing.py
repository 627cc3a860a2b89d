"""Traces that follow a record from ingest through evaluation to the destination request.

The W3C trace context (``traceparent``, ``tracestate``) travels in Kafka record headers,
the list of ``(str, bytes)`` pairs confluent-kafka reads and writes: evaluate continues
the trace of the input record (when its producer set one) and writes the context of its
own span on the delta it produces; deliver continues it again for the destination request.

Spans are exported over OTLP/HTTP only when an endpoint is configured. Without one the
sampler drops every span, which costs a few microseconds and no memory, yet the context
still flows: the delta carries the input record's trace id, so a deployment that exports
only from deliver (or only from the producer) still sees one connected trace.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

#: Kafka record headers as confluent-kafka produces them.
KafkaHeaders = list[tuple[str, bytes]]
#: Kafka record headers as confluent-kafka returns them from ``Message.headers()``.
ReceivedHeaders = Sequence[tuple[str, bytes | str | None]]
AttributeValue = str | int | float | bool

_PROPAGATOR = TraceContextTextMapPropagator()

#: Links kept per span (the SDK's default is 128): a destination request links to every
#: delta it carries, and a batch can hold several hundred.
MAX_SPAN_LINKS = 2_000


class _HeaderGetter(Getter[ReceivedHeaders]):
    def get(self, carrier: ReceivedHeaders, key: str) -> list[str] | None:
        values = [
            value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            for name, value in carrier
            if value is not None and name.lower() == key
        ]
        return values or None

    def keys(self, carrier: ReceivedHeaders) -> list[str]:
        return [name for name, _ in carrier]


class _HeaderSetter(Setter[KafkaHeaders]):
    def set(self, carrier: KafkaHeaders, key: str, value: str) -> None:
        # Replace rather than append: a record re-produced by streamsync carries one context.
        carrier[:] = [(name, data) for name, data in carrier if name.lower() != key]
        carrier.append((key, value.encode("ascii")))


_GETTER = _HeaderGetter()
_SETTER = _HeaderSetter()


def extract_trace_context(headers: ReceivedHeaders | None) -> Context:
    """The trace context carried by a Kafka record's headers (empty when there is none)."""
    return _PROPAGATOR.extract(headers or [], getter=_GETTER)


def inject_trace_context(
    headers: KafkaHeaders | None = None, context: Context | None = None
) -> KafkaHeaders:
    """``headers`` (a new list when ``None``) with the trace context of ``context`` (default:
    the current one) set; other headers are kept. Returns the same list."""
    carrier: KafkaHeaders = [] if headers is None else headers
    _PROPAGATOR.inject(carrier, context=context, setter=_SETTER)
    return carrier


class Tracing:
    """A tracer provider of its own (never the process-global one) and span helpers."""

    def __init__(
        self,
        *,
        service_name: str = "streamsync",
        role: str = "streamsync",
        exporter: SpanExporter | None = None,
        sample_ratio: float = 1.0,
    ) -> None:
        sampler: Sampler = (
            ParentBased(TraceIdRatioBased(sample_ratio)) if exporter is not None else ALWAYS_OFF
        )
        resource = Resource.create({"service.name": service_name, "streamsync.role": role})
        self._provider = TracerProvider(
            resource=resource, sampler=sampler, span_limits=SpanLimits(max_links=MAX_SPAN_LINKS)
        )
        if exporter is not None:
            self._provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self._provider.get_tracer("streamsync")
        self.exporting = exporter is not None

    @classmethod
    def otlp(
        cls,
        endpoint: str,
        *,
        service_name: str = "streamsync",
        role: str = "streamsync",
        sample_ratio: float = 1.0,
    ) -> Tracing:
        """Export spans over OTLP/HTTP (protobuf) to ``endpoint`` (``.../v1/traces``)."""
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return cls(
            service_name=service_name,
            role=role,
            exporter=OTLPSpanExporter(endpoint=endpoint),
            sample_ratio=sample_ratio,
        )

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        *,
        headers: ReceivedHeaders | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> Iterator[Span]:
        """A current span named ``name``, child of the context in ``headers`` when given
        (a consumed record's), else of the current span. Attributes must not hold personal
        data: the customer key at most."""
        parent = extract_trace_context(headers) if headers is not None else None
        with self.tracer.start_as_current_span(
            name, context=parent, kind=kind, attributes=attributes
        ) as span:
            yield span

    def headers(self, headers: KafkaHeaders | None = None) -> KafkaHeaders:
        """``headers`` with the current span's context, for a record about to be produced."""
        return inject_trace_context(headers)

    def flush(self, timeout_millis: int = 5_000) -> bool:
        """Export the spans still buffered (on shutdown, or before a test reads them)."""
        return self._provider.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self._provider.shutdown()
