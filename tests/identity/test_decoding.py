"""How records that link ids decode: only where links are resolved (``links=True``)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streamsync.cli import main
from streamsync.ingest.errors import DecodeError, DecodeReason
from streamsync.ingest.event import ALIAS, ANONYMOUS, Event, Skipped
from streamsync.ingest.pipelines import pipelines_event

CART = {
    "type": "track",
    "anonymousId": "x1",
    "event": "Product Added",
    "timestamp": "2026-01-01T10:00:00Z",
    "messageId": "m1",
}
ALIAS_RECORD = {
    "type": "alias",
    "userId": "u1",
    "previousId": "x1",
    "timestamp": "2026-01-01T10:30:00Z",
    "messageId": "m2",
}


def test_without_links_anonymous_records_and_aliases_are_skipped() -> None:
    assert pipelines_event(CART) == Skipped("no_customer")
    assert pipelines_event(ALIAS_RECORD) == Skipped("alias")
    both = pipelines_event({**CART, "userId": "u1"})
    assert isinstance(both, Event) and both.linked_id == ""


def test_with_links_they_are_events_naming_the_ids() -> None:
    anonymous = pipelines_event(CART, links=True)
    assert isinstance(anonymous, Event)
    assert (anonymous.customer_id, anonymous.id_kind) == ("x1", ANONYMOUS)
    both = pipelines_event({**CART, "userId": "u1"}, links=True)
    assert isinstance(both, Event) and (both.customer_id, both.linked_id) == ("u1", "x1")
    alias = pipelines_event(ALIAS_RECORD, links=True)
    assert isinstance(alias, Event)
    assert (alias.kind, alias.customer_id, alias.linked_id) == (ALIAS, "u1", "x1")
    assert alias.timestamp_ms == anonymous.timestamp_ms + 30 * 60_000


def test_an_alias_without_previous_id_is_a_missing_field_and_one_of_itself_is_skipped() -> None:
    with pytest.raises(DecodeError) as raised:
        pipelines_event({**ALIAS_RECORD, "previousId": None}, links=True)
    assert raised.value.reason is DecodeReason.MISSING_FIELD
    assert pipelines_event({**ALIAS_RECORD, "previousId": "u1"}, links=True) == Skipped("alias")
    assert pipelines_event({**ALIAS_RECORD, "userId": None}, links=True) == Skipped("alias")


def test_ingest_decode_shows_links_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "calls.jsonl"
    path.write_bytes(orjson.dumps(CART) + b"\n" + orjson.dumps(ALIAS_RECORD) + b"\n")
    assert main(["ingest", "decode", "--format", "pipelines_json", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "1: skipped (no_customer)",
        "2: skipped (alias)",
    ]
    argv = ["ingest", "decode", "--format", "pipelines_json", "--identity-links", str(path)]
    assert main(argv) == 0
    first, second = capsys.readouterr().out.splitlines()
    assert '"id_kind":"anonymous"' in first and '"customer_id":"x1"' in first
    assert '"kind":"alias"' in second and '"linked_id":"x1"' in second
