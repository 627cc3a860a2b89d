"""Several requests in flight (``batching.max_in_flight``): sent together only to distinct
customers, so a customer's changes keep their order; against the Braze stand-in."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from streamsync.destinations.braze import BrazeClient, BrazeConfig
from streamsync.destinations.client import Change, Request, Response
from streamsync.destinations.transport import HttpTransport
from streamsync.dev.standins import BrazeStandIn, StandInServer

from .conftest import BRAZE_KEY, delta, harness


class OneChangePerRequest(BrazeClient):
    """Braze, planned one change per request: a customer in two audiences then has two
    requests in one batch, the case the in-flight rule is about."""

    def plan(self, changes: list[Change]) -> list[Request]:
        requests: list[Request] = []
        for change in changes:
            requests.extend(super().plan([change]))
        return requests


class Watching:
    """The transport, recording which customers were in flight together."""

    def __init__(self, inner: HttpTransport) -> None:
        self.inner = inner
        self.lock = threading.Lock()
        self.in_flight: Counter[str] = Counter()
        self.requests_in_flight = 0
        self.most_in_flight = 0
        self.shared: list[set[str]] = []

    def send(self, request: Request) -> Response:
        customers = {change.customer_id for change in request.changes}
        with self.lock:
            if any(self.in_flight[c] for c in customers):
                self.shared.append(customers)
            self.in_flight.update(customers)
            self.requests_in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.requests_in_flight)
        try:
            return self.inner.send(request)
        finally:
            with self.lock:
                self.in_flight.subtract(customers)
                self.requests_in_flight -= 1

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def server() -> Iterator[StandInServer]:
    with StandInServer({"braze": BrazeStandIn(BRAZE_KEY, limit=3000, window_s=3.0)}) as s:
        yield s


def client(url: str) -> OneChangePerRequest:
    config = BrazeConfig.model_validate(
        {"kind": "braze", "base_url": url, "credentials": {"env": "X"},
         "rate_limit": {"limit": 3000, "window_s": 3.0}}
    )  # fmt: skip
    return OneChangePerRequest("braze", config, SecretStr(BRAZE_KEY))


def run(
    server: StandInServer, order: list[tuple[str, str]], **faults: object
) -> tuple[Watching, dict[str, int]]:
    url = server.urls["braze"]
    watching = Watching(HttpTransport(url, 5.0))
    h = harness(client(url), url, transport=watching, max_in_flight=4, timeout_s=5.0)
    # every request waits at the destination, so requests sent together are in flight
    # together whatever the machine's speed
    h.admin.faults(slow={"count": 10_000, "ms": 50}, strict=True, **faults)
    for seq, (customer, audience) in enumerate(order, 1):
        h.add(delta(customer, audience, "enter", seq))
    h.drain()
    h.sink.close()
    assert sum(len(changes) for changes in h.acked) == len(order)
    users = h.admin.profiles()["users"]
    for customer, audience in order:
        assert audience in users[f"external_id:{customer}"]["streamsync_audiences"]
    report = h.admin.report()
    assert report["violations"] == []
    assert h.dead.records == []
    return watching, report["counters"]


CUSTOMERS = [f"c{i:02d}" for i in range(24)]


def test_requests_to_distinct_customers_are_sent_together(server: StandInServer) -> None:
    order = [(c, "A") for c in CUSTOMERS] + [(c, "B") for c in CUSTOMERS]
    watching, _ = run(server, order)
    assert watching.most_in_flight == 4
    assert watching.shared == []


def test_a_customer_s_second_request_waits_for_the_first(server: StandInServer) -> None:
    # each customer's two requests are next to each other: none may go together
    order = [(c, a) for c in CUSTOMERS for a in ("A", "B")]
    watching, _ = run(server, order)
    assert watching.shared == []
    # A, B of one customer never together; B of one and A of the next may be
    assert watching.most_in_flight == 2


@pytest.mark.parametrize("faults", [{"status_burst": {"count": 3, "status": 503}},
                                    {"status_burst": {"count": 2, "status": 500}},
                                    {"drop_count": 2}])  # fmt: skip
def test_failures_among_requests_sent_together_are_retried_alone(
    server: StandInServer, faults: dict[str, object]
) -> None:
    # some requests of a group fail, the others succeed: the failed ones are sent again
    # (every change delivered once in the end, none dead-lettered)
    order = [(c, "A") for c in CUSTOMERS] + [(c, "B") for c in CUSTOMERS]
    watching, counters = run(server, order, **faults)
    assert watching.shared == []
    assert counters["requests"] > len(order)  # the failed ones were sent again
