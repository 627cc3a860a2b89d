"""The membership delta: what the engine emits and destinations consume.

One record per change of ``member(t)`` for one customer and one audience. Its time is
event time (the qualifying record's timestamp or a deadline), never the wall clock, so
a replay of the same log gives the same deltas as the live run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

Op = Literal["enter", "exit"]
ENTER: Op = "enter"
EXIT: Op = "exit"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


#: day (epoch ms // 86,400,000) -> its ``YYYY-MM-DDT`` prefix; cleared when full
_DAYS: dict[int, str] = {}
_DAYS_MAX = 4096
#: the last instant formatted and its text (an instant's deltas come one after another)
_last: tuple[int, str] = (-(2**63), "")


def format_rfc3339_ms(epoch_ms: int) -> str:
    """``2026-11-25T10:00:00.000Z``: RFC 3339, UTC, millisecond precision.

    Every delta is formatted, and ``strftime`` on a fresh ``datetime`` was about 7% of
    evaluate's CPU. The deltas of one instant come together and nearly every instant
    shares its day with earlier ones, so the last instant's text and each day's date
    are kept; the time of day is integer arithmetic. (A minute's prefix, tried first,
    missed on most deltas of a stream with a few records per customer a day.)"""
    global _last
    last = _last
    if last[0] == epoch_ms:
        return last[1]
    day, rest = divmod(epoch_ms, 86_400_000)  # floor: rest is in [0, 86,400,000) before 1970 too
    prefix = _DAYS.get(day)
    if prefix is None:
        if len(_DAYS) >= _DAYS_MAX:
            _DAYS.clear()
        moment = _EPOCH + timedelta(days=day)  # exact: no float round trip
        prefix = _DAYS[day] = moment.strftime("%Y-%m-%dT")
    hours, rest = divmod(rest, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    text = f"{prefix}{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}Z"
    _last = (epoch_ms, text)
    return text


def datetime_to_ms(moment: datetime) -> int:
    """Epoch milliseconds, exactly (integer arithmetic; floats lose a millisecond in some
    years). Naive means UTC; sub-millisecond digits are truncated."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MILLISECOND


def parse_rfc3339_ms(text: str) -> int:
    """Epoch milliseconds from an RFC 3339 / ISO 8601 timestamp (naive means UTC)."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    return datetime_to_ms(datetime.fromisoformat(value))


@dataclass(slots=True)
class MembershipDelta:
    """``op`` for ``customer_id`` in ``audience`` (``version``) at event time ``at_ms``.

    ``seq`` counts this customer's deltas in this audience from 1, so consumers can
    order and deduplicate per user. ``record_ids`` are the records that qualified the
    change (the records at that instant, or the record a deadline was computed from).
    ``holdout`` members are evaluated like everyone else but are not delivered.
    ``id_kind`` says what ``customer_id`` is (``streamsync.ingest.event.ID_KINDS``).
    ``correction`` marks a transition caused by a late record, emitted at the clock's
    instant because the instant at which it belonged had already been emitted
    (../shared/audiences.md, "Live clock and late records"). ``definition_change`` marks
    a transition caused by a changed, added or removed audience definition: the
    difference between what the old definition had emitted and what the new one gives
    now, emitted once when evaluate starts with the new definitions. ``stitched`` marks
    a transition caused by records that came through an identity link (an anonymous
    cart counted once its id is linked to the customer), emitted at the link's instant
    because the records' own instants had already been emitted
    (../shared/audiences.md, "Identity").
    """

    audience: str
    version: int
    customer_id: str
    op: Op
    at_ms: int
    seq: int
    record_ids: list[str] = field(default_factory=list)
    identifiers: dict[str, str] = field(default_factory=dict)
    holdout: bool = False
    id_kind: str = "id"
    correction: bool = False
    definition_change: bool = False
    stitched: bool = False

    def to_json(self) -> dict[str, Any]:
        """The JSON form (also the shape of the ``replay`` output lines)."""
        return {
            "audience": self.audience,
            "version": self.version,
            "customer_id": self.customer_id,
            "op": self.op,
            "at": format_rfc3339_ms(self.at_ms),
            "at_ms": self.at_ms,
            "seq": self.seq,
            "record_ids": list(self.record_ids),
            "identifiers": dict(self.identifiers),
            "holdout": self.holdout,
            "id_kind": self.id_kind,
            "correction": self.correction,
            "definition_change": self.definition_change,
            "stitched": self.stitched,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MembershipDelta:
        at_ms = data.get("at_ms")
        if not isinstance(at_ms, int):
            at_ms = parse_rfc3339_ms(str(data["at"]))
        op = data["op"]
        if op not in (ENTER, EXIT):
            raise ValueError(f"op must be enter or exit, not {op!r}")
        return cls(
            audience=str(data["audience"]),
            version=int(data["version"]),
            customer_id=str(data["customer_id"]),
            op=op,
            at_ms=at_ms,
            seq=int(data["seq"]),
            record_ids=[str(r) for r in data.get("record_ids", [])],
            identifiers={str(k): str(v) for k, v in data.get("identifiers", {}).items()},
            holdout=bool(data.get("holdout", False)),
            id_kind=str(data.get("id_kind") or "id"),
            correction=bool(data.get("correction", False)),
            definition_change=bool(data.get("definition_change", False)),
            stitched=bool(data.get("stitched", False)),
        )
