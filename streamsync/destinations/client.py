"""What a destination kind implements, and the values passed between it and the sink.

The sink (:mod:`streamsync.destinations.sink`) owns batching, ordering, rate limiting,
retries, dead letters and offsets; a kind only knows its API: how to name a customer
(:meth:`DestinationClient.identify`), how to turn a batch of net changes into HTTP
requests within the API's limits (:meth:`~DestinationClient.plan`), and what a response
means (:meth:`~DestinationClient.interpret`).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from streamsync.deltas.record import MembershipDelta
from streamsync.destinations.config import RateLimit
from streamsync.destinations.errors import (
    BatchRejected,
    FatalDestinationError,
    RateLimited,
    Rejection,
    RetriableError,
)

#: Header names whose values are secrets: shown as ``**********`` in dry-run logs.
SECRET_HEADERS = frozenset({"authorization"})
REDACTED = "**********"


@dataclass(slots=True)
class Change:
    """The net membership change of one customer in one audience, not yet acknowledged.

    ``offsets`` are the delta records it stands for (several when later deltas of the
    same customer and audience collapsed into it); they are committed once the destination
    acknowledged the change. ``identity`` is what the destination calls the customer.
    """

    customer_id: str
    audience: str
    enter: bool
    holdout: bool
    identity: Any
    delta: MembershipDelta
    partition: int
    offsets: list[int]
    added_at: float
    #: Kafka timestamp (epoch ms) of the latest delta, for commit-to-acknowledgement time
    committed_ms: int | None = None
    #: the Kafka headers of each delta that carried any, kept only while request spans
    #: are exported (:mod:`streamsync.destinations.tracing` links to their trace contexts)
    traces: list[Sequence[tuple[str, bytes | str | None]]] | None = None
    #: a repair of reconciliation (backfill, detach), not a delta: the membership is
    #: not new, so clients send no "entered" event for it
    reconciled: bool = False
    #: for the remove half of a move (the value acknowledged under another identity or
    #: value name): the add sent once the remove is acknowledged, carrying the offsets
    then: Change | None = None


@dataclass(slots=True)
class Request:
    """One HTTP request and the changes it carries. ``cost`` is what the vendor's rate
    limit counts (requests for Braze, users for MoEngage's data API); ``objects`` is how
    many objects it holds (for batch-fill statistics)."""

    method: str
    path: str
    body: bytes
    headers: dict[str, str]
    changes: list[Change]
    cost: int = 1
    objects: int = 0
    #: the client's own bookkeeping, e.g. which changes each object index stands for
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    elapsed_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class DestinationClient(ABC):
    """One configured destination's API. Subclasses are plain code: they run per batch."""

    kind: str = ""

    def __init__(self, name: str, rate_limit: RateLimit, max_customers_per_batch: int) -> None:
        self.name = name
        self.rate_limit = rate_limit
        self.max_customers_per_batch = max_customers_per_batch

    @abstractmethod
    def identify(self, delta: MembershipDelta) -> Any | None:
        """The destination's identifier for the delta's customer, or ``None`` when the
        delta carries none of the identifiers this destination is configured to use."""

    def check(self, delta: MembershipDelta) -> str | None:
        """Why this delta can never be written (dead-lettered as rejected), or ``None``."""
        return None

    def attribute_failures(self, delta: MembershipDelta) -> list[tuple[str, str]]:
        """``(attribute, reason)`` for each extra attribute of this delta that cannot be
        written; the change is delivered without them (a ride-along value never blocks the
        membership change it rides on)."""
        return []

    @abstractmethod
    def plan(self, changes: list[Change]) -> list[Request]:
        """Requests, in order, that apply ``changes`` (at most one per customer and
        audience), each within the API's documented limits."""

    @abstractmethod
    def reset_at(self, response: Response, now_epoch: float) -> float | None:
        """Epoch seconds of the rate-limit window's reset named by ``response``."""

    def interpret(self, request: Request, response: Response) -> list[tuple[Change, Rejection]]:
        """Per-change rejections of a 2xx response; raise the right
        :mod:`~streamsync.destinations.errors` class for anything else."""
        raise_for_status(self, response)
        return []

    def secret_values(self) -> list[str]:
        """Every secret this client sends, in each form it sends it (for log redaction)."""
        return []

    def redacted_body(self, request: Request) -> str:
        """The body as it may be logged (kinds with secrets in the body override this)."""
        return request.body.decode("utf-8", errors="replace")

    def redacted_headers(self, headers: dict[str, str]) -> dict[str, str]:
        return {k: REDACTED if k.lower() in SECRET_HEADERS else v for k, v in headers.items()}


def vendor_message(body: bytes, limit: int = 500) -> str:
    """A short printable form of an error body (vendors put their reason there)."""
    text = body.decode("utf-8", errors="replace").strip()
    return text[:limit]


def raise_for_status(client: DestinationClient, response: Response, request_id: str = "") -> None:
    """Map an HTTP status to the recovery class: 2xx returns; 429 ->
    :class:`RateLimited`; 5xx and 408 -> :class:`RetriableError`; 401/403/404/405/409 ->
    :class:`FatalDestinationError` (credentials, permissions, URL); other 4xx ->
    :class:`BatchRejected`."""
    status = response.status
    if 200 <= status < 300:
        return
    message = vendor_message(response.body)
    if status == 429:
        now = time.time()
        reset = client.reset_at(response, now)
        raise RateLimited(f"HTTP 429: {message}", reset if reset is not None else now + 1.0)
    if status >= 500 or status == 408:
        raise RetriableError(f"HTTP {status}: {message}")
    if status in (401, 403, 404, 405, 409):
        raise FatalDestinationError(f"{client.name}: HTTP {status} from the API: {message}")
    raise BatchRejected(Rejection(status, message, request_id))
