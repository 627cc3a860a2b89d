from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import SecretStr

from streamsync.deltas.record import MembershipDelta
from streamsync.destinations.braze import BrazeConfig
from streamsync.destinations.client import DestinationClient
from streamsync.destinations.config import Retry
from streamsync.destinations.dead_letter import DeliveryDeadLetters
from streamsync.destinations.errors import Rejection
from streamsync.destinations.kinds import build_client
from streamsync.destinations.moengage import MoEngageConfig
from streamsync.destinations.offsets import OffsetTracker
from streamsync.destinations.sink import DeliverySink
from streamsync.destinations.transport import HttpTransport
from streamsync.dev.standins import BrazeStandIn, MoEngageStandIn, StandInAdmin, StandInServer

BRAZE_KEY = "unit-braze-key"
MOE_APP, MOE_KEY = "UNITAPP", "unit-moe-key"


class RecordingDeadLetters(DeliveryDeadLetters):
    """Dead letters kept in memory (the Kafka path is covered end to end)."""

    def __init__(self) -> None:
        super().__init__(None, "dlq", "deltas")
        self.records: list[tuple[MembershipDelta, str, Rejection]] = []

    def delta(self, delta: MembershipDelta, partition: int, offset: int, *, reason: str,
              destination: str, rejection: Rejection) -> None:  # fmt: skip
        self.records.append((delta, reason, rejection))


@dataclass
class Harness:
    sink: DeliverySink
    dead: RecordingDeadLetters
    offsets: OffsetTracker
    admin: StandInAdmin
    next_offset: int = 0
    acked: list[Any] = field(default_factory=list)

    def add(self, delta: MembershipDelta, partition: int = 0) -> None:
        self.sink.add(delta, partition, self.next_offset)
        self.next_offset += 1

    def drain(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.sink.idle:
            assert time.monotonic() < deadline, "sink did not drain"
            self.sink.pump(force=True)
            time.sleep(min(0.01, self.sink.next_wakeup(time.monotonic())))


def delta(customer: str, audience: str, op: str, seq: int = 1, **extra: Any) -> MembershipDelta:
    return MembershipDelta(audience, 1, customer, op, 1_767_000_000_000 + seq, seq,  # type: ignore[arg-type]
                           **extra)  # fmt: skip


@pytest.fixture
def standins() -> Iterator[StandInServer]:
    server = StandInServer(
        {"braze": BrazeStandIn(BRAZE_KEY, limit=50, window_s=1.0),
         "moengage": MoEngageStandIn(MOE_APP, MOE_KEY, user_limit=2000, cohort_limit=50,
                                     window_s=2.0)}
    )  # fmt: skip
    with server:
        yield server


def harness(client: DestinationClient, url: str, **options: Any) -> Harness:
    offsets = OffsetTracker()
    dead = RecordingDeadLetters()
    timeout_s = options.pop("timeout_s", 2.0)
    transport = options.pop("transport", None) or HttpTransport(url, timeout_s)
    h = Harness(
        DeliverySink(
            client, transport, dead, offsets,
            retry=Retry(initial_backoff_s=0.01, max_backoff_s=0.1, timeout_s=timeout_s),
            linger_s=options.pop("linger_s", 0.0), max_buffered=options.pop("max_buffered", 10_000),
            **options,
        ),
        dead, offsets, StandInAdmin(url),
    )  # fmt: skip
    h.sink.on_ack = lambda changes, _at: h.acked.append(changes)
    return h


def braze_client(url: str, key: str = BRAZE_KEY, **settings: Any) -> DestinationClient:
    config = BrazeConfig.model_validate(
        {"kind": "braze", "base_url": url, "credentials": {"env": "X"},
         "rate_limit": {"limit": 50, "window_s": 1.0}, **settings}
    )  # fmt: skip
    return build_client(config, "braze", SecretStr(key))


def moe_client(url: str, **settings: Any) -> DestinationClient:
    config = MoEngageConfig.model_validate(
        {"kind": "moengage", "base_url": url, "app_id": MOE_APP, "credentials": {"env": "X"},
         "rate_limit": {"limit": 2000, "window_s": 2.0}, **settings}
    )  # fmt: skip
    return build_client(config, "moengage", SecretStr(MOE_KEY))
