"""Changed audience definitions applied to stored customers: only the difference.

Evaluate keeps, per customer, the facts its audiences read (see
:mod:`streamsync.audiences.compiler`) in a layout that depends on the definitions. When
it starts with other definitions, a :class:`Migration` from the stored program to the
new one turns each stored customer into the new layout and says what changes:

* every audience gets a fingerprint over what decides membership (its conditions,
  windows, sticky period, holdout and, transitively, the fingerprints of the audiences it
  references); owner, description, destinations and version are not part of it. An
  audience whose fingerprint is unchanged keeps its membership, sequence numbers and
  deadlines as they are, and nothing is emitted for it;
* a changed or added audience is evaluated at the clock's instant over the customer's
  facts, and only the difference from what the old definition had emitted is emitted
  (enters for new members, exits for those who left), ``seq`` continuing and marked
  ``definition_change``;
* a removed audience is retired: an exit for each current member; its facts are dropped.

Facts and definitions meet in the *fact catalogue* (``Program.facts``): a fact is keyed
by what it is (the records it reads and its parameters), never by the audience reading
it. A new definition's fact is taken from state when the old program kept the same fact,
or one it can be derived from exactly (the last 3 timestamps per key in 7 days hold the
last 2 in 1 day; a count capped at 5 holds the count capped at 2; a 30-day running sum
holds the 7-day one). Any other fact needs the input history: the caller rebuilds it
from the input topics (:meth:`Migration.history_updates`) or reports the audiences
reading it as not exact (:attr:`AudienceChange.missing`).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from streamsync.audiences.compiler import (
    CUSTOMER_ID,
    DUE,
    ID_KIND,
    IDS,
    MEMBERS,
    NEVER,
    Customer,
    FactKey,
    Program,
    Updater,
)
from streamsync.audiences.definition import STORED, Audience, Condition
from streamsync.audiences.engine import cited_records, in_holdout, unpack_identifiers
from streamsync.audiences.matching import Predicate
from streamsync.deltas.record import ENTER, EXIT, MembershipDelta

#: Fields of an audience that say who owns it, where it goes and which revision it is,
#: not who is a member: editing them changes no membership.
NOT_EVALUATED = frozenset({"owner", "description", "destinations", "version"})

Kind = Literal["unchanged", "changed", "added", "removed"]


def audience_fingerprints(audiences: Sequence[Audience]) -> dict[str, str]:
    """Each audience's fingerprint: its definition as evaluated, plus the fingerprints
    of the audiences it references (a changed reference changes its dependents)."""
    by_name = {a.name: a for a in audiences}
    out: dict[str, str] = {}

    def visit(audience: Audience, trail: frozenset[str]) -> str:
        known = out.get(audience.name)
        if known is not None:
            return known
        h = hashlib.blake2b(digest_size=12)
        h.update(audience.model_dump_json(exclude=set(NOT_EVALUATED)).encode())
        for ref in sorted(audience.references()):
            target = by_name.get(ref)
            if target is None or ref in trail:  # the loader refuses both
                h.update(f"|{ref}:?".encode())
            else:
                h.update(f"|{ref}:{visit(target, trail | {audience.name})}".encode())
        out[audience.name] = value = h.hexdigest()
        return value

    for audience in audiences:
        visit(audience, frozenset())
    return out


def definitions_record(audiences: Sequence[Audience], layout: int) -> bytes:
    """The definitions as stored next to the state they were evaluated with: enough to
    compile the same program again (owner, description and destinations left out),
    with the version of the compiler's customer layout (``layout``): a program compiled
    by a compiler of another layout would misread the stored customers."""
    items = [
        a.model_dump(
            mode="json",
            by_alias=True,
            exclude_unset=True,
            exclude={"owner", "description", "destinations"},
        )
        for a in audiences
    ]
    return orjson.dumps({"layout": layout, "audiences": items})


def stored_definitions(data: bytes) -> tuple[int, list[Audience]]:
    """The layout version and audiences of a :func:`definitions_record`."""
    record = orjson.loads(data)
    audiences = [
        Audience.model_validate({**item, "owner": "-", "description": "-"}, context=STORED)
        for item in record["audiences"]
    ]
    return int(record["layout"]), audiences


def longest_window(cond: Condition) -> int | None:
    """How far back a condition can look, in ms; ``None``: without bound (a lifetime
    count or sum, a trait, open items, "since the last ...")."""
    kind = cond.kind
    if kind in ("all", "any", "not_"):
        spans = [longest_window(child) for child in cond.children()]
        return None if None in spans else max((s for s in spans if s is not None), default=0)
    if kind == "since_last":
        spec = cond.since_last
        assert spec is not None
        if spec.less_than is None or spec.offset_by is not None:
            return None
        return spec.less_than
    if kind == "happened":
        return 0
    if kind == "count":
        assert cond.count is not None
        return cond.count.within
    if kind == "sum":
        assert cond.sum is not None
        return cond.sum.within
    if kind == "in_audience":
        return 0  # the referenced audience answers for its own history
    return None


@dataclass
class AudienceChange:
    """What a migration does to one audience."""

    name: str
    kind: Kind
    version_before: int | None
    version_after: int | None
    #: why the rebuilt membership may not be what the full history gives (empty: exact)
    missing: list[str] = field(default_factory=list)
    #: facts of this audience that must be rebuilt from the input history
    history: list[FactKey] = field(default_factory=list)
    #: how far back the definition looks (``None``: the whole history)
    window_ms: int | None = 0

    @property
    def exact_from_state(self) -> bool:
        return not self.missing and not self.history


def describe_fact(key: FactKey) -> str:
    """What fact ``key`` is, in words (for the operator)."""
    kind = key[0]
    if kind in ("latest", "count", "window_count"):
        match = orjson.loads(key[1])
        what = {"latest": "the latest", "count": "the count of", "window_count": "the times of"}
        return f"{what[kind]} {match['event']!r} records"
    if kind == "sum":
        return "a running sum"
    if kind == "open":
        return "open items"
    if kind == "trait":
        return f"trait {key[1]!r}"
    return f"{key[1]} period"


Derive = Callable[[list[Any]], list[Any]]


def _derive(key: FactKey, old: Mapping[FactKey, tuple[int, int]]) -> tuple[int, Derive] | None:
    """An old fact ``key`` can be computed from exactly: ``(its first slot, how)``."""
    kind = key[0]
    for other, (slot, _) in old.items():
        if other[0] != kind or (other[1] != key[1] and kind != "sum"):
            continue
        if kind == "latest" and key[2] is None:
            return slot, _drop_offset
        if kind == "count" and other[2] >= key[2]:
            return slot, functools.partial(_cap_count, cap=key[2])
        if (
            kind == "window_count"
            and other[4] == key[4]
            and other[2] >= key[2]
            and other[3] >= key[3]
        ):
            return slot, functools.partial(_fewer_times, n_old=other[2], n=key[2])
        if kind == "sum":
            mine, theirs = orjson.loads(key[1]), orjson.loads(other[1])
            within, their_within = mine.pop("within"), theirs.pop("within")
            if mine == theirs and within is not None and (their_within or 0) >= within:
                return slot, _copy_entries
    return None


def _drop_offset(values: list[Any]) -> list[Any]:
    return values[:2]


def _cap_count(values: list[Any], cap: int) -> list[Any]:
    return [None if values[0] is None else min(values[0], cap)]


def _copy_entries(values: list[Any]) -> list[Any]:
    return [None if values[0] is None else list(values[0])]


def _fewer_times(values: list[Any], n_old: int, n: int) -> list[Any]:
    """A window table of ``n_old`` records per key (blocks ``[key, t1..tn, r1..rn]``,
    oldest first) cut to the ``n`` newest."""
    table = values[0]
    if table is None:
        return [None]
    stride = 2 * n_old + 1
    out: list[Any] = []
    for j in range(0, len(table), stride):
        out.append(table[j])
        out.extend(table[j + 1 + n_old - n : j + 1 + n_old])
        out.extend(table[j + 1 + 2 * n_old - n : j + stride])
    return [out]


def _merged(
    copies: list[tuple[int, int, int, Derive | None]],
) -> list[tuple[int, int, int, Derive | None]]:
    """Plain copies of adjacent slots (the same run of facts in both layouts) as one
    slice each: one assignment per customer instead of one per fact."""
    out: list[tuple[int, int, int, Derive | None]] = []
    for new_slot, old_slot, width, derive in sorted(copies, key=lambda c: c[0]):
        if out and derive is None:
            last_new, last_old, last_width, last_derive = out[-1]
            if (
                last_derive is None
                and last_new + last_width == new_slot
                and last_old + last_width == old_slot
            ):
                out[-1] = (last_new, last_old, last_width + width, None)
                continue
        out.append((new_slot, old_slot, width, derive))
    return out


class Migration:
    """From the customers of program ``old`` to those of program ``new``; see the
    module docstring."""

    def __init__(self, old: Program, new: Program) -> None:
        self.old = old
        self.new = new
        old_prints = audience_fingerprints(old.audiences)
        new_prints = audience_fingerprints(new.audiences)
        old_index = {a.name: i for i, a in enumerate(old.audiences)}
        self.changes: dict[str, AudienceChange] = {}
        #: new audience index -> old index (unchanged and changed audiences)
        self._before: dict[int, int] = {}
        self._unchanged: list[tuple[int, int]] = []
        rebuilt = 0
        for i, audience in enumerate(new.audiences):
            j = old_index.get(audience.name)
            if j is None:
                kind: Kind = "added"
            else:
                self._before[i] = j
                same = old_prints[audience.name] == new_prints[audience.name]
                kind = "unchanged" if same else "changed"
                if same:
                    self._unchanged.append((i, j))
            if kind != "unchanged":
                rebuilt |= 1 << i
            self.changes[audience.name] = AudienceChange(
                audience.name,
                kind,
                None if j is None else old.audiences[j].version,
                audience.version,
            )
        self._removed = [j for j, a in enumerate(old.audiences) if a.name not in self.changes]
        for j in self._removed:
            a = old.audiences[j]
            self.changes[a.name] = AudienceChange(a.name, "removed", a.version, None)
        self.rebuilt = rebuilt
        #: (new slot, old slot, width, derive or None) of every fact taken from state
        self._copies: list[tuple[int, int, int, Derive | None]] = []
        #: facts no stored fact gives: rebuilt from history, or missing
        self.history_facts: dict[FactKey, tuple[int, int]] = {}
        readers = new.fact_readers
        for key, (slot, width) in new.facts.items():
            source = old.facts.get(key)
            if source is not None and key[0] != "private":
                self._copies.append((slot, source[0], width, None))
                continue
            if key[0] == "private" and source is not None:
                audience = key[2]
                if self.changes[audience].kind == "unchanged":
                    self._copies.append((slot, source[0], width, None))
                    continue
            derived = None if key[0] == "private" else _derive(key, old.facts)
            if derived is not None:
                self._copies.append((slot, derived[0], width, derived[1]))
                continue
            if key[0] == "private":
                name = key[2]
                self.changes[name].missing.append(
                    f"{describe_fact(key)}s start again at the change (state keeps only the "
                    "current period's end)"
                )
                continue
            self.history_facts[key] = (slot, width)
            mask = readers.get(slot, 0)
            for i, audience in enumerate(new.audiences):
                if mask >> i & 1:
                    self.changes[audience.name].history.append(key)
        for audience in new.audiences:
            change = self.changes[audience.name]
            spans = [longest_window(audience.entry)]
            if audience.exit is not None:
                spans.append(longest_window(audience.exit))
            change.window_ms = None if None in spans else max(s for s in spans if s is not None)
        self._copies = _merged(self._copies)
        self._timed_slots = [slot for slot in new.next_slots if slot]

    # -- what it does ------------------------------------------------------------------

    @property
    def same_layout(self) -> bool:
        """Whether stored customers are already in the new layout (only owners,
        descriptions, destinations or versions changed): nothing to convert."""
        old, new = self.old, self.new
        return (
            not self.changed
            and old.width == new.width
            and old.next_slots == new.next_slots
            and all(i == j for i, j in self._before.items())
            and all(a == b and d is None for a, b, _, d in self._copies)
        )

    @property
    def changed(self) -> bool:
        """Whether any audience's membership can change (else only the layout moves)."""
        return any(c.kind != "unchanged" for c in self.changes.values())

    def describe(self, change: AudienceChange) -> str:
        """One line for the operator's log."""
        if change.kind == "removed":
            return f"{change.name}: removed; its members exit"
        head = f"{change.name}: {change.kind}"
        if change.version_before is not None and change.version_before != change.version_after:
            head += f" (version {change.version_before} -> {change.version_after})"
        if change.kind == "unchanged":
            return head
        if change.exact_from_state:
            return head + "; rebuilt from state"
        if change.missing:
            return head + "; rebuilt, but NOT exact: " + "; ".join(change.missing)
        facts = ", ".join(sorted({describe_fact(k) for k in change.history}))
        return head + f"; rebuilt from state and the input history ({facts})"

    def history_updates(self) -> dict[str, list[tuple[str, Predicate | None, Updater]]]:
        """Record name -> the updates of the facts to rebuild from history."""
        slots = {slot for slot, _ in self.history_facts.values()}
        out: dict[str, list[tuple[str, Predicate | None, Updater]]] = {}
        for name, kind, pred, update, slot in self.new.updates:
            if slot in slots:
                out.setdefault(name, []).append((kind, pred, update))
        return out

    # -- per customer ------------------------------------------------------------------

    def convert(
        self, old: Customer, t: int, history: Customer | None = None
    ) -> tuple[Customer, list[MembershipDelta]]:
        """Customer ``old`` in the new layout, its changed and added audiences evaluated
        at ``t`` (the clock's instant), and the deltas that brings: the difference from
        what the old definitions had emitted, and exits of removed audiences.
        ``history`` is a new-layout customer holding the facts rebuilt from history."""
        new_program, old_program = self.new, self.old
        c = new_program.new_customer(old[CUSTOMER_ID])
        c[IDS] = old[IDS]
        c[ID_KIND] = old[ID_KIND]
        for new_slot, old_slot, width, derive in self._copies:
            values = old[old_slot : old_slot + width]
            c[new_slot : new_slot + width] = values if derive is None else derive(values)
        if history is not None:
            for slot, width in self.history_facts.values():
                c[slot : slot + width] = history[slot : slot + width]
        old_members = old[MEMBERS]
        members = 0
        old_seq0, seq0 = old_program.seq0, new_program.seq0
        for i, j in self._before.items():
            c[seq0 + i] = old[old_seq0 + j]
        for i, j in self._unchanged:
            if old_members >> j & 1:
                members |= 1 << i
            slot, old_slot = new_program.next_slots[i], old_program.next_slots[j]
            if slot:
                c[slot] = old[old_slot]
        c[MEMBERS] = members
        out: list[MembershipDelta] = []
        mask = self.rebuilt
        evaluators = new_program.evaluators
        while mask:
            low = mask & -mask
            mask ^= low
            i = low.bit_length() - 1
            value, nxt = evaluators[i](c, t)
            slot = new_program.next_slots[i]
            if slot:
                c[slot] = nxt
            before = self._before.get(i)
            told = before is not None and bool(old_members >> before & 1)
            if value:
                c[MEMBERS] |= low
            if value != told:
                out.append(self._delta(c, new_program, i, t, value))
        for j in self._removed:
            if old_members >> j & 1:
                out.append(self._delta(old, old_program, j, t, False))
        timed = self._timed_slots
        c[DUE] = min([c[slot] for slot in timed]) if timed else NEVER
        return c, out

    @staticmethod
    def _delta(c: Customer, program: Program, i: int, t: int, entered: bool) -> MembershipDelta:
        """The definition-change delta of audience ``i`` of ``program`` for ``c``. An
        enter cites the records its facts hold (as a deadline delta does)."""
        audience = program.audiences[i]
        seq_slot = program.seq0 + i
        seq = c[seq_slot] + 1
        c[seq_slot] = seq
        rids = cited_records(program, c, i, t, entered, None)
        cid: str = c[CUSTOMER_ID]
        percent = audience.holdout.percent if audience.holdout else 0.0
        return MembershipDelta(
            audience.name,
            audience.version,
            cid,
            ENTER if entered else EXIT,
            t,
            seq,
            rids,
            {} if (packed := c[IDS]) is None else dict(unpack_identifiers(packed)),
            bool(percent) and in_holdout(audience.name, cid, percent),
            c[ID_KIND],
            False,
            True,
        )


__all__ = [
    "AudienceChange",
    "Migration",
    "audience_fingerprints",
    "definitions_record",
    "describe_fact",
    "longest_window",
    "stored_definitions",
]
