"""Control of a destination while it runs: the commands, and the state they add up to.

Commands are records of a compacted topic per deliver group, ``<group>.control``
(:mod:`~streamsync.destinations.control_topic` reads and writes it), so every replica of
the destination, and any operator with access to Kafka, sees the same state: the control
file on a pod's disk reached one replica only. This module is pure (no Kafka), so the
fold is tested on its own.

Records (key: the JSON array ``["<command>", "<audience>" | null]``; null: the whole
destination; value: a JSON object, or none to undo):

* ``pause``: ``{"at_ms", "by"}``; none: resumed.
* ``detach``: as ``pause``; the audience (or every audience) is no longer desired: its
  values are removed from exactly the profiles they were acknowledged on, nothing more is
  sent for it. Undone by ``resume``, which backfills it again.
* ``rollout``: a :class:`~streamsync.destinations.rollout.Cohort` replacing the
  configuration's (the destination's, or that audience's); none: the configuration's.
* ``resync``: ``{"id", "at_ms", "by"}``: a one-off request to send the whole desired
  state again (to the audience, or all). Compaction keeps the latest per scope.
* ``resynced``: keyed by deltas partition (its number as a string) instead of audience;
  ``{"applied": [[<audience> | null, "<id>"], ...], "at_ms", "by"}``: the resyncs the
  partition's owner applied to it. A replica applies every resync its partitions have not
  applied when they are assigned to it, so a request written while no replica ran, or
  while the partition changed hands, is not lost (the latest record alone could not tell
  a request already done from one nobody saw).
* ``replica``: keyed by replica id instead of audience; what a running replica reports
  (partitions, paused, last error) for ``streamsync destinations status``; none when it
  stopped cleanly.

One key per command and scope, so two operators pausing two audiences never overwrite
each other, and compaction keeps the topic as small as the state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from streamsync.destinations.rollout import Cohort, Rollout

Command = Literal["pause", "detach", "rollout", "resync", "resynced", "replica"]
COMMANDS: tuple[Command, ...] = ("pause", "detach", "rollout", "resync", "resynced", "replica")
#: What every record's value carries besides the command's own fields: when, and who.
METADATA = ("at_ms", "by")
#: A control key: (command, audience or replica id; ``None``: the whole destination).
ControlKey = tuple[Command, str | None]


def control_topic(group: str) -> str:
    """The control topic of the deliver consumer group ``group``."""
    return f"{group}.control"


def encode_key(command: Command, scope: str | None) -> bytes:
    return orjson.dumps([command, scope])


def decode_key(raw: bytes) -> ControlKey:
    """``ValueError`` for a key that is not a known command's."""
    data = orjson.loads(raw)
    if not (isinstance(data, list) and len(data) == 2 and data[0] in COMMANDS):
        raise ValueError("not a control key")
    scope = data[1]
    if scope is not None and not isinstance(scope, str):
        raise ValueError("not a control key")
    command: Command = data[0]
    return command, scope


@dataclass(frozen=True)
class ControlView:
    """What the control records say now (the latest record of each key)."""

    paused: bool = False
    paused_audiences: frozenset[str] = frozenset()
    #: every audience detached
    detached_all: bool = False
    detached: frozenset[str] = frozenset()
    #: the destination's cohort override (``None``: the configuration's)
    rollout: Cohort | None = None
    audience_rollouts: Mapping[str, Cohort] = field(default_factory=dict)
    #: the latest resync request per scope: its id
    resyncs: Mapping[str | None, str] = field(default_factory=dict)
    #: deltas partition -> the resync id applied to it per scope
    resynced: Mapping[int, Mapping[str | None, str]] = field(default_factory=dict)
    #: replica id -> what it reported
    replicas: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def resyncs_due(
        self, partition: int, applied: Mapping[str | None, str] | None = None
    ) -> list[str | None]:
        """The scopes whose latest resync ``partition`` has not applied (``applied``: what
        its owner applied since the topic was read, which wins)."""
        done = {**self.resynced.get(partition, {}), **(applied or {})}
        return [scope for scope, request in self.resyncs.items() if done.get(scope) != request]

    def effective_rollout(self, configured: Rollout) -> Rollout:
        """The configuration's rollout with this view's overrides."""
        if self.rollout is None and not self.audience_rollouts:
            return configured
        base = self.rollout
        audiences = {**configured.audiences, **self.audience_rollouts}
        return Rollout(
            customers=configured.customers if base is None else base.customers,
            percent=configured.percent if base is None else base.percent,
            audiences=audiences,
        )

    def same_filter(self, other: ControlView) -> bool:
        """Whether the desired state is the same under both (pause changes nothing)."""
        return (
            self.detached_all == other.detached_all
            and self.detached == other.detached
            and self.rollout == other.rollout
            and dict(self.audience_rollouts) == dict(other.audience_rollouts)
        )


def fold(records: Mapping[ControlKey, bytes]) -> ControlView:
    """The view of the latest value of each key (tombstones already removed); values that
    do not decode are left out (the writer validates, so only a foreign record can be)."""
    paused = detached_all = False
    paused_audiences: set[str] = set()
    detached: set[str] = set()
    rollout: Cohort | None = None
    audience_rollouts: dict[str, Cohort] = {}
    resyncs: dict[str | None, str] = {}
    replicas: dict[str, Mapping[str, Any]] = {}
    resynced: dict[int, Mapping[str | None, str]] = {}
    for (command, scope), raw in records.items():
        try:
            value = orjson.loads(raw)
            if not isinstance(value, dict):
                continue
            if command == "pause":
                if scope is None:
                    paused = True
                else:
                    paused_audiences.add(scope)
            elif command == "detach":
                if scope is None:
                    detached_all = True
                else:
                    detached.add(scope)
            elif command == "rollout":
                body = {k: v for k, v in value.items() if k not in METADATA}
                cohort = Cohort.model_validate(body)
                if scope is None:
                    rollout = cohort
                else:
                    audience_rollouts[scope] = cohort
            elif command == "resync":
                resyncs[scope] = str(value["id"])
            elif command == "resynced" and scope is not None:
                resynced[int(scope)] = {
                    (None if audience is None else str(audience)): str(request)
                    for audience, request in value["applied"]
                }
            elif command == "replica" and scope is not None:
                replicas[scope] = value
        except (orjson.JSONDecodeError, ValidationError, KeyError, TypeError, ValueError):
            continue
    return ControlView(
        paused, frozenset(paused_audiences), detached_all, frozenset(detached), rollout,
        audience_rollouts, resyncs, resynced, replicas,
    )  # fmt: skip
