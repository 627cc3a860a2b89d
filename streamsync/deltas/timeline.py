"""One customer's membership timeline as ``explain`` prints it, from a file or from Kafka.

Both modes of ``streamsync explain`` print the same lines for the same deltas: one line
per change (time, ENTER or EXIT, audience, seq), under it the records that qualified the
change, and the audiences the customer is a member of after the last change. Only where
a record was found differs (``line 12`` in a file, ``topic[0]@41`` on Kafka), so a live
answer can be compared line by line with a replay of the same records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

from streamsync.audiences.durations import format_duration
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
) -> Iterator[str]:
    """The timeline of ``deltas`` (one customer's, in order) with the qualifying records
    found in ``records`` (record id -> event); a record not found is printed by id, with
    ``not_found`` after it (why it is missing)."""
    if not deltas:
        yield "  never entered" + (f" {audience}" if audience else " any audience")
    members: set[str] = set()
    for delta in deltas:
        arrow = "ENTER" if delta.op == ENTER else "EXIT "
        yield f"{format_rfc3339_ms(delta.at_ms)}  {arrow} {delta.audience}  (seq {delta.seq})"
        (members.add if delta.op == ENTER else members.discard)(delta.audience)
        for rid in delta.record_ids:
            event = records.get(rid)
            if event is None:
                yield f"    record {rid}{not_found}"
                continue
            gap = delta.at_ms - event.timestamp_ms
            after = "" if gap == 0 else f", {format_duration(gap)} before this change"
            yield (
                f"    because of {event.kind} {event.name!r} at "
                f"{format_rfc3339_ms(event.timestamp_ms)} ({where(event)}, record {rid}{after})"
            )
    yield "member now of: " + (", ".join(sorted(members)) or "nothing")
