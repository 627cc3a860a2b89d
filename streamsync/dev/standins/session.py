"""Delivery to local stand-ins in one call (the demo's delivery stage).

:func:`deliver_to_standins` starts both stand-ins on loopback, points a ``braze`` and a
``moengage`` destination at them (replacing any of those names in the configuration),
runs delivery for a bounded time with :func:`~streamsync.destinations.deliver.run_delivery`,
and reports per destination what was delivered, what the stand-ins recorded, and - given
the deltas offline replay produced - which customers' profiles differ from replay.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from streamsync.config import AppConfig
from streamsync.deltas.record import MembershipDelta
from streamsync.destinations.braze import BrazeConfig
from streamsync.destinations.deliver import DeliverResult, run_delivery
from streamsync.destinations.moengage import MoEngageConfig
from streamsync.dev.standins.common import StandInAdmin
from streamsync.dev.standins.compare import (
    braze_members,
    differences,
    expected_members,
    moengage_members,
)
from streamsync.dev.standins.runner import (
    DEFAULT_BRAZE_KEY,
    DEFAULT_MOENGAGE_APP_ID,
    DEFAULT_MOENGAGE_KEY,
    StandInOptions,
    build_server,
)

_ENV = {"STANDIN_BRAZE_KEY": DEFAULT_BRAZE_KEY, "STANDIN_MOENGAGE_KEY": DEFAULT_MOENGAGE_KEY}


@dataclass
class StandInDelivery:
    destination: str
    result: DeliverResult
    members: int
    report: dict[str, Any]
    #: customers whose profile differs from replay (empty when it matches, or unchecked)
    differences: list[str] = field(default_factory=list)

    @property
    def violations(self) -> list[dict[str, Any]]:
        return list(self.report.get("violations", []))


def deliver_to_standins(
    config: AppConfig,
    *,
    duration_s: float,
    idle_timeout_s: float = 3.0,
    replayed: Iterable[MembershipDelta] | None = None,
    options: StandInOptions | None = None,
) -> dict[str, StandInDelivery]:
    """Deliver ``config.deltas.topic`` to both stand-ins; see the module docstring."""
    server = build_server(options or StandInOptions(), env={})
    with server:
        destinations = dict(config.destinations)
        run = uuid.uuid4().hex[:8]  # fresh consumer groups: each session reads from the start
        destinations["braze"] = BrazeConfig.model_validate(
            {"kind": "braze", "base_url": server.urls["braze"],
             "credentials": {"env": "STANDIN_BRAZE_KEY"},
             "group_id": f"streamsync-standins-braze-{run}"}
        )  # fmt: skip
        destinations["moengage"] = MoEngageConfig.model_validate(
            {"kind": "moengage", "base_url": server.urls["moengage"],
             "app_id": DEFAULT_MOENGAGE_APP_ID, "credentials": {"env": "STANDIN_MOENGAGE_KEY"},
             "group_id": f"streamsync-standins-moengage-{run}"}
        )  # fmt: skip
        app = config.model_copy(update={"destinations": destinations})
        results = run_delivery(
            app, ["braze", "moengage"], duration_s=duration_s, idle_timeout_s=idle_timeout_s,
            env=_ENV,
        )  # fmt: skip
        expected = expected_members(replayed) if replayed is not None else None
        report: dict[str, StandInDelivery] = {}
        for name, read in (("braze", braze_members), ("moengage", moengage_members)):
            admin = StandInAdmin(server.urls[name])
            members = read(admin.profiles())
            report[name] = StandInDelivery(
                name, results[name], len(members), admin.report(),
                differences(expected, members) if expected is not None else [],
            )  # fmt: skip
        return report
