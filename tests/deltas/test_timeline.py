"""The explain timeline's lines for what a delta carries besides its records: the
definition version, definition changes and corrections, and the reason of a deadline."""

from __future__ import annotations

from pathlib import Path

from streamsync.audiences.loader import load_audiences
from streamsync.deltas.record import ENTER, EXIT, MembershipDelta, parse_rfc3339_ms
from streamsync.deltas.timeline import timeline_lines
from streamsync.ingest.event import Event

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "audiences"
APP = "ACT__ActiveApp__10m"
OPENED = parse_rfc3339_ms("2026-01-01T00:00:00Z")
TEN_MINUTES = 10 * 60_000


def _app_changes(version: int) -> list[MembershipDelta]:
    return [
        MembershipDelta(APP, version, "c1", ENTER, OPENED, 1, ["app-1"]),
        MembershipDelta(APP, version, "c1", EXIT, OPENED + TEN_MINUTES, 2, ["app-1"]),
    ]


RECORDS = {"app-1": Event("c1", "track", "Application Opened", OPENED, "app-1")}
DEFINITIONS = {a.name: a for a in load_audiences(EXAMPLES)}


def test_each_change_shows_its_version_and_a_deadline_its_reason() -> None:
    lines = list(timeline_lines(_app_changes(1), RECORDS, definitions=DEFINITIONS))
    assert lines[0] == f"2026-01-01T00:00:00.000Z  ENTER {APP}  (v1, seq 1)"
    assert lines[2] == f"2026-01-01T00:10:00.000Z  EXIT  {APP}  (v1, seq 2)"
    assert lines[4] == (
        "    reason: window of 10m passed since 'Application Opened' at 2026-01-01T00:00:00.000Z"
    )
    # The enter is the record's own: no reason line.
    assert not lines[1].startswith("    reason") and len(lines) == 6


def test_a_change_of_another_version_gets_no_derived_reason() -> None:
    lines = list(timeline_lines(_app_changes(2), RECORDS, definitions=DEFINITIONS))
    assert "(v2, seq 2)" in lines[2]
    assert lines[4] == (
        "    reason: not derived (this change was made by v2; the definition at hand is v1)"
    )
    # Without definitions, the records alone.
    assert not any("reason" in line for line in timeline_lines(_app_changes(1), RECORDS))


def test_definition_changes_and_corrections_say_so() -> None:
    deltas = [
        MembershipDelta(APP, 3, "c1", ENTER, OPENED, 1, [], definition_change=True),
        MembershipDelta(APP, 3, "c1", EXIT, OPENED + 1, 2, ["app-1"], correction=True),
    ]
    lines = list(timeline_lines(deltas, RECORDS, definitions=DEFINITIONS))
    assert lines[0] == f"2026-01-01T00:00:00.000Z  ENTER {APP}  (v3, seq 1, definition change)"
    assert lines[1] == "    reason: the definition changed (to v3)"
    assert lines[2] == f"2026-01-01T00:00:00.001Z  EXIT  {APP}  (v3, seq 2, correction)"
