"""The audience fingerprint in the stored state: it changes with what is evaluated, and
only with that (editing an owner, a description or the destinations keeps the state)."""

from __future__ import annotations

from streamsync.audiences.compiler import compile_audiences
from streamsync.audiences.loader import load_audiences
from streamsync.resources import project_path
from streamsync.state.codec import fingerprint

AUDIENCES = load_audiences(project_path("examples", "audiences"))


#: an audience no other one references (so it can be renamed)
LEAF = next(
    i
    for i, a in enumerate(AUDIENCES)
    if not any(a.name in other.references() for other in AUDIENCES)
)


def _fingerprint(**changes: object) -> str:
    changed = list(AUDIENCES)
    changed[LEAF] = changed[LEAF].model_copy(update=changes)
    return fingerprint(compile_audiences(changed))


def test_owner_description_and_destinations_do_not_change_it() -> None:
    same = _fingerprint()
    assert _fingerprint(description="Another wording of the same audience.") == same
    assert _fingerprint(owner="growth@example.com") == same
    assert _fingerprint(destinations=["braze"]) == same


def test_what_is_evaluated_changes_it() -> None:
    same = _fingerprint()
    first = AUDIENCES[LEAF]
    assert _fingerprint(version=first.version + 1) != same
    assert _fingerprint(name=first.name + "_v2") != same
    assert _fingerprint(sticky_for=3_600_000) != same
    other = next(a.entry for a in AUDIENCES if a.entry != first.entry)
    assert _fingerprint(entry=other) != same
