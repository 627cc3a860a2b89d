"""Delivery to local stand-ins in one call (the demo's delivery stage).

:func:`deliver_to_standins` starts both stand-ins on loopback, points a ``braze`` and a
``moengage`` destination at them (keeping the configuration's settings for those names,
if any, except the URL, credentials, consumer group and MoEngage app id), runs delivery
for a bounded time with :func:`~streamsync.destinations.deliver.run_delivery`, and
reports per destination what was delivered, what the stand-ins recorded, and - given the
deltas offline replay produced - which customers' profiles differ from replay.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from streamsync.config import AppConfig
from streamsync.credentials import Credentials
from streamsync.deltas.record import MembershipDelta
from streamsync.destinations.braze import BrazeConfig
from streamsync.destinations.config import DestinationConfig
from streamsync.destinations.deliver import DeliverResult, run_delivery
from streamsync.destinations.moengage import MoEngageConfig
from streamsync.destinations.sink import DeliverySink
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
    #: customer -> the values of its membership attribute in the stand-in
    memberships: dict[str, set[str]] = field(default_factory=dict)
    #: customers whose profile differs from replay (empty when it matches, or unchecked)
    differences: list[str] = field(default_factory=list)
    #: customers whose profile differs from the membership table (likewise)
    table_differences: list[str] = field(default_factory=list)

    @property
    def violations(self) -> list[dict[str, Any]]:
        return list(self.report.get("violations", []))


def _pointed(
    current: DestinationConfig | None,
    model: type[DestinationConfig],
    update: dict[str, Any],
) -> DestinationConfig:
    """``current`` (when it is of the kind ``model``) with ``update`` applied; else a
    ``model`` with its defaults and ``update``."""
    if isinstance(current, model):
        return current.model_copy(update=update)
    return model.model_validate({"kind": model.model_fields["kind"].default, **update})


def deliver_to_standins(
    config: AppConfig,
    *,
    duration_s: float,
    idle_timeout_s: float = 3.0,
    replayed: Iterable[MembershipDelta] | None = None,
    options: StandInOptions | None = None,
    progress: Callable[[DeliverResult, DeliverySink], None] | None = None,
    progress_interval_s: float = 10.0,
) -> dict[str, StandInDelivery]:
    """Deliver ``config.deltas.topic`` to both stand-ins; see the module docstring.
    ``progress`` is called from each destination's thread every ``progress_interval_s``."""
    server = build_server(options or StandInOptions(), env={})
    with server:
        destinations = dict(config.destinations)
        run = uuid.uuid4().hex[:8]  # fresh consumer groups: each session reads from the start
        destinations["braze"] = _pointed(
            destinations.get("braze"), BrazeConfig,
            {"base_url": server.urls["braze"], "credentials": Credentials(env="STANDIN_BRAZE_KEY"),
             "group_id": f"streamsync-standins-braze-{run}"},
        )  # fmt: skip
        destinations["moengage"] = _pointed(
            destinations.get("moengage"), MoEngageConfig,
            {"base_url": server.urls["moengage"], "app_id": DEFAULT_MOENGAGE_APP_ID,
             "credentials": Credentials(env="STANDIN_MOENGAGE_KEY"),
             "group_id": f"streamsync-standins-moengage-{run}"},
        )  # fmt: skip
        app = config.model_copy(update={"destinations": destinations})
        results = run_delivery(
            app, ["braze", "moengage"], duration_s=duration_s, idle_timeout_s=idle_timeout_s,
            env=_ENV, progress=progress, progress_interval_s=progress_interval_s,
        )  # fmt: skip
        replayed = list(replayed) if replayed is not None else None
        report: dict[str, StandInDelivery] = {}
        for name, read in (("braze", braze_members), ("moengage", moengage_members)):
            dest = destinations[name]
            attribute = getattr(dest, "array_attribute", None) or "streamsync_audiences"
            expected = (
                expected_members(replayed, holdout=dest.holdout, suffix=dest.holdout_suffix)
                if replayed is not None
                else None
            )
            admin = StandInAdmin(server.urls[name])
            members = read(admin.profiles(), attribute)
            report[name] = StandInDelivery(
                name, results[name], len(members), admin.report(), memberships=members,
                differences=differences(expected, members) if expected is not None else [],
            )  # fmt: skip
        return report
