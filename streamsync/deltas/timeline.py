"""One customer's membership timeline as ``explain`` prints it, from a file or from Kafka.

Both modes of ``streamsync explain`` print the same lines for the same deltas: one line
per change (time, ENTER or EXIT, audience, the definition version it was made under,
seq, and whether it was a definition change, a correction or stitched), under it the
records that qualified the change (and the linked id a record came through) and the
reason of a change no record caused (a deadline, derived from the definition: see
:mod:`streamsync.audiences.reasons`), and the audiences the
customer is a member of after the last change. Only where a record was found differs
(``line 12`` in a file, ``topic[0]@41`` on Kafka), so a live answer can be compared line
by line with a replay of the same records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

from streamsync.audiences.definition import Audience
from streamsync.audiences.durations import format_duration
from streamsync.audiences.reasons import deadline_reasons
from streamsync.deltas.record import ENTER, MembershipDelta, format_rfc3339_ms
from streamsync.ingest.event import Event


def line_position(event: Event) -> str:
    """Where a record of a JSON-lines file is: its line number."""
    return f"line {event.source.offset}" if event.source else "?"


def kafka_position(event: Event) -> str:
    """Where a record on Kafka is: ``topic[partition]@offset``."""
    source = event.source
    return f"{source.topic}[{source.partition}]@{source.offset}" if source else "?"


def timeline_lines(
    deltas: Sequence[MembershipDelta],
    records: Mapping[str, Event],
    *,
    audience: str | None = None,
    where: Callable[[Event], str] = line_position,
    not_found: str = "",
    definitions: Mapping[str, Audience] | None = None,
) -> Iterator[str]:
    """The timeline of ``deltas`` (one customer's, in order) with the qualifying records
    found in ``records`` (record id -> event); a record not found is printed by id, with
    ``not_found`` after it (why it is missing). With ``definitions`` (audience name ->
    definition, references included), a change at an instant none of its records has
    gets the deadline that caused it."""
    if not deltas:
        yield "  never entered" + (f" {audience}" if audience else " any audience")
    members: set[str] = set()
    entered: dict[str, int] = {}
    for delta in deltas:
        arrow = "ENTER" if delta.op == ENTER else "EXIT "
        flags = "".join(
            (
                ", definition change" if delta.definition_change else "",
                ", correction" if delta.correction else "",
                ", stitched" if delta.stitched else "",
            )
        )
        yield (
            f"{format_rfc3339_ms(delta.at_ms)}  {arrow} {delta.audience}  "
            f"(v{delta.version}, seq {delta.seq}{flags})"
        )
        (members.add if delta.op == ENTER else members.discard)(delta.audience)
        for rid in delta.record_ids:
            event = records.get(rid)
            if event is None:
                yield f"    record {rid}{not_found}"
                continue
            gap = delta.at_ms - event.timestamp_ms
            after = "" if gap == 0 else f", {format_duration(gap)} before this change"
            through = f", through linked id {event.via}" if event.via else ""
            yield (
                f"    because of {event.kind} {event.name!r} at "
                f"{format_rfc3339_ms(event.timestamp_ms)} ({where(event)}, record {rid}{after}"
                f"{through})"
            )
        if definitions is not None:
            found = [e for rid in delta.record_ids if (e := records.get(rid)) is not None]
            yield from _reason_lines(delta, found, definitions, entered.get(delta.audience))
        if delta.op == ENTER:
            entered[delta.audience] = delta.at_ms
    yield "member now of: " + (", ".join(sorted(members)) or "nothing")


def _reason_lines(
    delta: MembershipDelta,
    found: list[Event],
    definitions: Mapping[str, Audience],
    entered_at: int | None,
) -> Iterator[str]:
    """The ``reason:`` lines of one change: a definition change says so; a change no
    cited record is at (a deadline's) gets the deadlines that fall at its instant, when
    the definition of its version is at hand."""
    if delta.definition_change:
        yield f"    reason: the definition changed (to v{delta.version})"
        return
    if any(e.timestamp_ms == delta.at_ms for e in found):
        return  # a record of this instant caused it: the records below say which
    definition = definitions.get(delta.audience)
    if definition is None:
        return
    if definition.version != delta.version:
        yield (
            f"    reason: not derived (this change was made by v{delta.version}; "
            f"the definition at hand is v{definition.version})"
        )
        return
    at = delta.at_ms
    for reason in deadline_reasons(definition, definitions, at, found, entered_at=entered_at):
        yield f"    reason: {reason}"
