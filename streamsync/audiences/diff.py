"""What changed audience definitions would do to the current membership, before deploying.

``streamsync audiences diff`` answers "who would enter and leave, how many" for new
definitions. It predicts what evaluate's migration (:mod:`.migration`) emits on the
restart, so it follows the same rules:

* the same :class:`~streamsync.audiences.migration.Migration` plan says which audiences
  are unchanged, changed, added or removed (the per-audience fingerprints; an edited
  description is unchanged);
* an unchanged audience gets nothing, whatever a fresh evaluation would say: evaluate
  keeps its membership as it is;
* a changed or added audience's members are the new definitions evaluated at the
  clock's instant (replay, the live engine over the input records); the prediction is
  the difference from who is a member now (the membership table, or replay of the
  current definitions over a file);
* a removed audience's members all leave.

Evaluate migrates each task at its own clock, so the caller compares one task
partition at a time (:meth:`DiffBuilder.add`), each with its own instant, and adds up.
This module holds no I/O: where the records, the members and the instants come from is
the caller's (a file, or :mod:`streamsync.runtime.snapshot` on Kafka).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamsync.audiences.compiler import compile_audiences
from streamsync.audiences.definition import Audience
from streamsync.audiences.durations import format_duration
from streamsync.audiences.engine import DEFAULT_ALLOWED_LATENESS_MS
from streamsync.audiences.migration import AudienceChange, Kind, Migration, describe_fact
from streamsync.audiences.replay import replay
from streamsync.deltas.membership import MemberKey
from streamsync.deltas.record import ENTER, format_rfc3339_ms
from streamsync.ingest.event import Event

#: Customers shown each way per audience unless asked otherwise.
DEFAULT_SAMPLE = 5
#: The kinds evaluate rebuilds (the others keep or drop their membership as a whole).
REBUILT: frozenset[Kind] = frozenset({"changed", "added"})


def membership(
    audiences: Sequence[Audience],
    events: Iterable[Event],
    *,
    until_ms: int | None = None,
    allowed_lateness_ms: int = DEFAULT_ALLOWED_LATENESS_MS,
) -> set[MemberKey]:
    """Who is a member of ``audiences`` after replaying ``events`` (arrival order) with
    the clock at ``until_ms`` (default: the newest record, as replay does)."""
    members: set[MemberKey] = set()
    for delta in replay(
        audiences,
        events,
        until_ms=until_ms,
        allowed_lateness_ms=allowed_lateness_ms,
        progress=None,
    ):
        # One customer's deltas of one audience come in seq order: the last one wins.
        key = (delta.audience, delta.customer_id)
        if delta.op == ENTER:
            members.add(key)
        else:
            members.discard(key)
    return members


@dataclass
class AudienceDiff:
    """What the new definitions do to one audience."""

    name: str
    kind: Kind
    version_before: int | None
    version_after: int | None
    #: members now (the table, or replay of the current definitions)
    size_before: int
    #: customers who would enter / leave (sorted)
    enter: list[str] = field(default_factory=list)
    leave: list[str] = field(default_factory=list)
    #: how evaluate will rebuild it (the migration's one line)
    plan: str = ""
    #: why the rebuild (or this prediction) may not be what the full history gives
    missing: list[str] = field(default_factory=list)
    #: how far back the new definition looks (``None``: the whole history)
    window_ms: int | None = 0

    @property
    def size_after(self) -> int:
        return self.size_before + len(self.enter) - len(self.leave)

    @property
    def versions(self) -> str:
        if self.version_before is not None and self.version_before == self.version_after:
            return f"version {self.version_before}"
        before = "-" if self.version_before is None else str(self.version_before)
        after = "-" if self.version_after is None else str(self.version_after)
        return f"version {before} -> {after}"

    def to_json(self, sample: int) -> dict[str, Any]:
        return {
            "audience": self.name,
            "kind": self.kind,
            "version_before": self.version_before,
            "version_after": self.version_after,
            "enter": len(self.enter),
            "leave": len(self.leave),
            "size_before": self.size_before,
            "size_after": self.size_after,
            "sample_enter": self.enter[:sample],
            "sample_leave": self.leave[:sample],
            "plan": self.plan,
            "missing": list(self.missing),
            "window_ms": self.window_ms,
        }


@dataclass
class DiffReport:
    """The whole prediction: every audience of either definition set, and where the
    numbers come from."""

    audiences: list[AudienceDiff]
    #: where the current membership and the records came from (one line)
    source: str
    #: the instant (or range of instants) the new definitions are evaluated at
    instants: list[int]
    #: what the reader should know about the prediction as a whole
    notes: list[str] = field(default_factory=list)

    def to_json(self, sample: int) -> dict[str, Any]:
        return {
            "source": self.source,
            "instants_ms": sorted(set(self.instants)),
            "enter": sum(len(a.enter) for a in self.audiences),
            "leave": sum(len(a.leave) for a in self.audiences),
            "audiences": [a.to_json(sample) for a in self.audiences],
            "notes": list(self.notes),
        }


class DiffBuilder:
    """Adds up, task partition by task partition, the difference new definitions make
    (see the module docstring)."""

    def __init__(
        self,
        current: Sequence[Audience],
        new: Sequence[Audience],
        *,
        allowed_lateness_ms: int = DEFAULT_ALLOWED_LATENESS_MS,
    ) -> None:
        self.current = list(current)
        self.new = list(new)
        self.lateness = allowed_lateness_ms
        self.migration = Migration(
            compile_audiences(current, lateness_ms=allowed_lateness_ms),
            compile_audiences(new, lateness_ms=allowed_lateness_ms),
        )
        self.kinds: dict[str, Kind] = {n: c.kind for n, c in self.migration.changes.items()}
        self._before: Counter[str] = Counter()
        self._enter: dict[str, set[str]] = {name: set() for name in self.kinds}
        self._leave: dict[str, set[str]] = {name: set() for name in self.kinds}
        #: audiences the current membership names that neither definition set has
        self.unknown: Counter[str] = Counter()
        #: per audience, extra reasons the prediction may be off
        self.missing: dict[str, list[str]] = {name: [] for name in self.kinds}

    @property
    def rebuilt(self) -> bool:
        """Whether any audience needs the new definitions evaluated (else the records
        need not be replayed at all)."""
        return any(kind in REBUILT for kind in self.kinds.values())

    def evaluate(self, events: Iterable[Event], *, until_ms: int | None = None) -> set[MemberKey]:
        """Members of the new definitions' rebuilt audiences over ``events``."""
        if not self.rebuilt:
            return set()
        kinds = self.kinds
        return {
            key
            for key in membership(
                self.new, events, until_ms=until_ms, allowed_lateness_ms=self.lateness
            )
            if kinds[key[0]] in REBUILT
        }

    def add(self, told: Iterable[MemberKey], now: set[MemberKey]) -> None:
        """One task partition: ``told`` its current members, ``now`` the new
        definitions' members of the rebuilt audiences at its instant."""
        kinds = self.kinds
        told_set = set(told)
        for key in told_set:
            name, customer = key
            kind = kinds.get(name)
            if kind is None:
                self.unknown[name] += 1
                continue
            self._before[name] += 1
            if kind == "removed" or (kind in REBUILT and key not in now):
                self._leave[name].add(customer)
        for key in now - told_set:
            self._enter[key[0]].add(key[1])

    def keep(self, told: Iterable[MemberKey]) -> None:
        """One task partition evaluate migrates nothing in (no instant evaluated yet):
        its members are counted, nothing changes."""
        for name, _ in told:
            if name in self.kinds:
                self._before[name] += 1
            else:
                self.unknown[name] += 1

    def note(self, audience: str, line: str) -> None:
        """Say why ``audience``'s prediction may be off (each line once)."""
        lines = self.missing.setdefault(audience, [])
        if line not in lines:
            lines.append(line)

    def report(self, source: str, instants: list[int], notes: list[str]) -> DiffReport:
        migration = self.migration
        out: list[AudienceDiff] = []
        for name, change in migration.changes.items():
            missing = list(change.missing)
            missing.extend(m for m in self.missing.get(name, []) if m not in missing)
            out.append(
                AudienceDiff(
                    name,
                    change.kind,
                    change.version_before,
                    change.version_after,
                    self._before[name],
                    sorted(self._enter[name]),
                    sorted(self._leave[name]),
                    plan=_plan(change),
                    missing=missing,
                    window_ms=change.window_ms,
                )
            )
        notes = list(notes)
        for name, count in sorted(self.unknown.items()):
            notes.append(
                f"{count:,} current member(s) of {name}, in neither definition set, are "
                "left as they are"
            )
        return DiffReport(out, source, instants, notes)


def report_lines(report: DiffReport, sample: int) -> list[str]:
    """The report as text: one block per audience that changes, one line for the
    unchanged ones."""
    lines = [f"source: {report.source}"]
    instants = sorted(set(report.instants))
    if len(instants) == 1:
        lines.append(f"instant: {format_rfc3339_ms(instants[0])}")
    elif instants:
        first, last = format_rfc3339_ms(instants[0]), format_rfc3339_ms(instants[-1])
        lines.append(f"instants: {first} .. {last} (each partition's clock)")
    unchanged = [a for a in report.audiences if a.kind == "unchanged"]
    for diff in report.audiences:
        if diff.kind == "unchanged":
            continue
        lines.append("")
        lines.append(f"{diff.name}: {diff.kind} ({diff.versions})")
        lines.append(
            f"  enter {len(diff.enter):,}, leave {len(diff.leave):,}; "
            f"size {diff.size_before:,} -> {diff.size_after:,}"
        )
        if sample and diff.enter:
            lines.append("  entering: " + _sample(diff.enter, sample))
        if sample and diff.leave:
            lines.append("  leaving: " + _sample(diff.leave, sample))
        if diff.kind != "removed":
            lines.append(f"  looks back: {_window(diff.window_ms)}; {diff.plan}")
        for line in diff.missing:
            lines.append(f"  missing history: {line}")
    if unchanged:
        lines.append("")
        sizes = ", ".join(f"{a.name} ({a.size_before:,})" for a in unchanged)
        lines.append(f"unchanged, nothing emitted: {len(unchanged)} audience(s): {sizes}")
    if report.notes:
        lines.append("")
        lines.extend(f"note: {note}" for note in report.notes)
    total_enter = sum(len(a.enter) for a in report.audiences)
    total_leave = sum(len(a.leave) for a in report.audiences)
    lines.append("")
    lines.append(f"total: {total_enter:,} enter(s), {total_leave:,} leave(s)")
    return lines


def _plan(change: AudienceChange) -> str:
    """How evaluate rebuilds ``change``'s audience, in words."""
    if change.kind == "removed":
        return "its members exit"
    if change.kind == "unchanged":
        return "kept as it is"
    if change.history:
        facts = ", ".join(sorted({describe_fact(k) for k in change.history}))
        return f"evaluate rebuilds it from state and the input history ({facts})"
    if change.missing:
        return "evaluate rebuilds it from state, NOT exactly"
    return "evaluate rebuilds it from state"


def _window(window_ms: int | None) -> str:
    if window_ms is None:
        return "the whole history"
    return format_duration(window_ms) if window_ms else "no window of its own"


def _sample(customers: list[str], n: int) -> str:
    shown = ", ".join(customers[:n])
    more = len(customers) - n
    return shown + (f" (and {more:,} more)" if more > 0 else "")


__all__ = [
    "DEFAULT_SAMPLE",
    "AudienceDiff",
    "DiffBuilder",
    "DiffReport",
    "membership",
    "report_lines",
]
