"""Spans of destination requests, linked to the traces of the deltas they carry.

Evaluate writes the W3C trace context of each delta on its Kafka record; deliver keeps
those headers (only while spans are exported) on the buffered change and, for every HTTP
request it sends, records one ``deliver <destination>`` CLIENT span with a span *link* to
the context of every delta the request carries (several per change when later deltas of
the same customer and audience collapsed into it).

Why one span per request with links, not a child span per delta: a request carries up to
hundreds of deltas from as many traces, and it is the request (its latency, its status, its
retries) that is worth seeing; one span per attempt costs the same whatever the batch size,
and a trace viewer follows the links from each delta's trace to the request and back.

Why the request span is a root and sampled on its own: OpenTelemetry's parent-based
sampling looks at the parent only, never at links, and a request has many "parents" with
their own sampled flags. Evaluate without an OTLP endpoint samples nothing, so its deltas
carry ``sampled=0``; following that flag would lose every destination request of a
deployment that exports only from deliver. So the span is sampled by deliver's own ratio
(``observability.trace_sample_ratio``) and links to each context, sampled or not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, get_current_span

from streamsync.destinations.client import REDACTED, DestinationClient, Request
from streamsync.observability.tracing import (
    AttributeValue,
    ReceivedHeaders,
    Tracing,
    extract_trace_context,
)

#: A fresh, empty context: request spans never become children of whatever is current.
_ROOT = Context()


def delta_link(headers: ReceivedHeaders) -> Link | None:
    """A link to the trace context in a delta record's headers, or ``None`` without one."""
    context = get_current_span(extract_trace_context(headers)).get_span_context()
    return Link(context) if context.is_valid else None


class RequestTracer:
    """Records the span of each request a destination client sends."""

    def __init__(self, tracing: Tracing, client: DestinationClient) -> None:
        self.tracing = tracing
        self.destination = client.name
        self.kind = client.kind
        self.name = f"deliver {client.name}"
        self._secrets = [s for s in client.secret_values() if s]

    @property
    def enabled(self) -> bool:
        """Spans are exported; otherwise the sampler drops them, so deliver keeps no
        headers and records nothing (the hot path stays as without tracing)."""
        return self.tracing.exporting

    def links(self, request: Request) -> list[Link]:
        links: list[Link] = []
        for change in request.changes:
            for headers in change.traces or ():
                link = delta_link(headers)
                if link is not None:
                    links.append(link)
        return links

    def _path(self, path: str) -> str:
        for secret in self._secrets:
            path = path.replace(secret, REDACTED)
        return path

    @contextlib.contextmanager
    def request(self, request: Request) -> Iterator[Span]:
        """The span of one attempt to send ``request``; the caller sets the response
        status on it. An exception marks it failed with the exception's class only (its
        message may quote the vendor's body)."""
        links = self.links(request)
        attributes: dict[str, AttributeValue] = {
            "streamsync.destination": self.destination,
            "streamsync.destination.kind": self.kind,
            "http.request.method": request.method,
            "url.path": self._path(request.path),
            "streamsync.changes": len(request.changes),
            "streamsync.deltas": sum(len(c.offsets) for c in request.changes),
            "streamsync.objects": request.objects,
            "streamsync.linked_traces": len(links),
        }
        with self.tracing.tracer.start_as_current_span(
            self.name,
            context=_ROOT,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            links=links,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except Exception as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
