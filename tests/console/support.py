"""A console without a broker: configuration, in-memory reads and a test client."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp.test_utils import TestClient, TestServer

from streamsync.audiences.definition import Audience
from streamsync.audiences.diff import DiffBuilder, DiffReport, membership
from streamsync.config import AppConfig, parse_config
from streamsync.console.acknowledged_counts import AcknowledgedCounts
from streamsync.console.customer_destinations import CustomerAcknowledged, desired_filter
from streamsync.console.dead_letters import DeadLetters
from streamsync.console.server import Console, create_console
from streamsync.deltas.audit import CustomerAudit
from streamsync.deltas.membership import Member, MembershipTable
from streamsync.deltas.record import MembershipDelta
from streamsync.destinations.acknowledged import Acked
from streamsync.destinations.commands import ControlView
from streamsync.destinations.desired import DesiredFilter
from streamsync.ingest.event import Event
from streamsync.resources import project_path

T = TypeVar("T")

EXAMPLE_AUDIENCES = project_path("examples", "audiences")
VIEWER_TOKEN = "viewer-token-0123456789"
OPERATOR_TOKEN = "operator-token-0123456789"
PASSWORD = "pass-word-0123456789"
ENV = {"VIEWER_TOKEN": VIEWER_TOKEN, "OPERATOR_TOKEN": OPERATOR_TOKEN, "PASSWORD": PASSWORD}
EVIL = '<script>alert("x")</script>'
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def config(tmp: Path, **console: Any) -> AppConfig:
    section: dict[str, Any] = {
        "auth": {
            "users": [
                {"name": "vera", "role": "viewer", "token": {"env": "VIEWER_TOKEN"}},
                {
                    "name": "otto",
                    "role": "operator",
                    "token": {"env": "OPERATOR_TOKEN"},
                    "password": {"env": "PASSWORD"},
                },
            ]
        },
        "audiences": str(EXAMPLE_AUDIENCES),
        **console,
    }
    return parse_config(
        {
            "kafka": {"bootstrap_servers": "127.0.0.1:1"},
            "ingest": {"topics": [{"name": "in", "format": "pipelines_json"}]},
            "deltas": {"topic": "d"},
            "evaluate": {"audiences": str(EXAMPLE_AUDIENCES), "state_dir": str(tmp / "state")},
            "destinations": {
                "braze": {
                    "kind": "braze",
                    "base_url": "http://127.0.0.1:1",
                    "credentials": {"env": "BRAZE_KEY"},
                    "control_file": str(tmp / "braze-control.yaml"),
                }
            },
            "console": section,
        },
        base_dir=tmp,
        env={},
    )


def delta(
    customer: str,
    op: str,
    at_ms: int,
    seq: int,
    audience: str = "ACT__CartAbandon__90m",
    **extra: Any,
) -> MembershipDelta:
    return MembershipDelta(
        audience=audience,
        version=1,
        customer_id=customer,
        op=op,  # type: ignore[arg-type]
        at_ms=at_ms,
        seq=seq,
        **extra,
    )


class FakeSources:
    """The membership table and explain, from lists given by the test."""

    def __init__(self, deltas: list[MembershipDelta], records: dict[str, Event]) -> None:
        self.deltas = deltas
        self.records = records
        #: destination -> what its acknowledged topic holds (absent: no topic yet)
        self.acked: dict[str, AcknowledgedCounts] = {}
        #: the definition sets each diff was asked for
        self.diffs: list[tuple[list[str], list[Audience]]] = []
        self.dead: DeadLetters = DeadLetters(topics=["streamsync.dead-letter"])
        #: destination -> customer -> audience -> entry (absent destination: no topic yet)
        self.customer_acked: dict[str, dict[str, dict[str, Acked]]] = {}
        #: destination -> the control topic's view (absent: it says nothing)
        self.views: dict[str, ControlView] = {}
        self.config: AppConfig | None = None

    def _table(self) -> MembershipTable:
        table = MembershipTable("d.members", [0])
        for d in self.deltas:
            if d.op == "enter":
                table.members[(d.audience, d.customer_id)] = Member.from_enter(d)
            else:
                table.members.pop((d.audience, d.customer_id), None)
        return table

    async def members(self) -> MembershipTable:
        return self._table()

    async def customer_members(self, customer: str) -> MembershipTable | None:
        table = self._table()
        table.members = {k: v for k, v in table.members.items() if k[1] == customer}
        return table

    async def audit(self, customer: str) -> CustomerAudit:
        audit = CustomerAudit(customer, "d", [0], input_topics=["in"])
        audit.deltas = [d for d in self.deltas if d.customer_id == customer]
        audit.records = {r: e for r, e in self.records.items() if r in audit.wanted}
        return audit

    async def acknowledged(self, destination: str) -> AcknowledgedCounts:
        found = self.acked.get(destination)
        if found is None:
            return AcknowledgedCounts(destination, f"{destination}.acknowledged", exists=False)
        return found

    async def customer_acknowledged(self, destination: str, customer: str) -> CustomerAcknowledged:
        topic = f"{destination}.acknowledged"
        held = self.customer_acked.get(destination)
        if held is None:
            return CustomerAcknowledged(destination, topic, exists=False)
        return CustomerAcknowledged(destination, topic, dict(held.get(customer, {})), 0)

    async def desired_filter(self, destination: str) -> tuple[DesiredFilter, str]:
        assert self.config is not None, "make_console sets the configuration"
        view = self.views.get(destination, ControlView())
        return desired_filter(self.config, destination, view), ""

    async def diff(self, current: list[Audience], new: list[Audience]) -> DiffReport:
        """``audiences diff`` as ``--input`` computes it: the records replayed with both
        definition sets, the clock at the newest record."""
        self.diffs.append(([a.name for a in current], new))
        events = sorted(self.records.values(), key=lambda e: e.timestamp_ms)
        builder = DiffBuilder(current, new, allowed_lateness_ms=0)
        told = membership(current, events, allowed_lateness_ms=0)
        builder.add(told, builder.evaluate(events))
        newest = [events[-1].timestamp_ms] if events else []
        return builder.report("replay of the test's records", newest, [])

    async def dead_letters(self) -> DeadLetters:
        return self.dead


def make_console(
    tmp: Path,
    deltas: list[MembershipDelta] | None = None,
    records: dict[str, Event] | None = None,
    **console: Any,
) -> Console:
    deltas = deltas or []
    sources = FakeSources(deltas, records or {})
    sources.config = config(tmp, **console)
    made = create_console(
        sources.config,
        sources=sources,
        feed=False,
        env=ENV,
    )
    made.store.apply(deltas)
    made.store.set_state("live")
    return made


def run_client(console: Console, work: Callable[[TestClient[Any, Any]], Awaitable[T]]) -> T:
    """``work`` with a test client of ``console``'s application."""

    async def main() -> T:
        async with TestClient(TestServer(console.app)) as client:
            return await work(client)

    return asyncio.run(main())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
