"""Audience files: the shipped examples load, and bad definitions get file:line reasons."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamsync.audiences.loader import AudienceDefinitionError, check_audiences, load_audiences
from streamsync.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "audiences"

CANONICAL = {
    "ACT__CartAbandon__90m",
    "ACT__CheckoutAbandon__HighIntent",
    "ACT__CartAbandon__MedIntent",
    "SUP__RecentPurchasers__7d",
    "SUP__VIP__LTV500",
    "ACT__Winback__60to120d",
    "ACT__ViewedTwiceNoPurchase__7d",
    "SUP__SupportTicketOpen",
    "SUP__RecentlyContacted__7d",
    "ACT__ActiveApp__10m",
    "SUP__SubscriptionActive",
    "ACT__DueForReorder__7d",
    "ACT__StarterKit__CrossSell__30d",
}


def test_examples_are_the_canonical_thirteen() -> None:
    audiences, problems = check_audiences(EXAMPLES)
    assert problems == []
    assert {a.name for a in audiences} == CANONICAL
    assert all(a.owner and a.description and a.version >= 1 for a in audiences)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "a.yaml"
    path.write_text(text.lstrip("\n"))
    return path


def _messages(path: Path) -> list[str]:
    _, problems = check_audiences(path)
    return [str(p) for p in problems]


def test_unknown_key_and_bad_duration_have_lines(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
name: ACT__Cart__90m
version: 1
owner: me
description: d
entry:
  since_last:
    event: Product Added
    at_least: 90 minutes
    less_than: 7d
    colour: red
""",
    )
    messages = _messages(path)
    assert any(f"{path}:8: error:" in m and "not a duration" in m for m in messages), messages
    assert any(f"{path}:10: error:" in m and "unknown key 'colour'" in m for m in messages)


def test_missing_fields_and_two_conditions(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
name: ACT__X__1
entry:
  since_last: {event: A, less_than: 1d}
  trait: {name: s, equals: x}
""",
    )
    text = "\n".join(_messages(path))
    assert "'version' is required" in text
    assert "'owner' is required" in text
    assert "exactly one of" in text


def test_cycle_and_unknown_reference_rejected(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
audiences:
  - {name: ACT__A__1, version: 1, owner: o, description: d,
     entry: {all: [{in_audience: ACT__B__1}, {since_last: {event: E, less_than: 1d}}]}}
  - {name: ACT__B__1, version: 1, owner: o, description: d,
     entry: {all: [{in_audience: ACT__A__1}, {since_last: {event: E, less_than: 1d}}]}}
  - {name: ACT__C__1, version: 1, owner: o, description: d,
     entry: {in_audience: ACT__Nope__1}}
""",
    )
    text = "\n".join(_messages(path))
    assert "cycle: ACT__A__1 -> ACT__B__1 -> ACT__A__1" in text or "cycle: ACT__B__1" in text
    assert "references 'ACT__Nope__1', which is not defined" in text
    with pytest.raises(AudienceDefinitionError):
        load_audiences(path)


def test_audience_that_never_expires_is_rejected(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
name: SUP__EverBought__All
version: 1
owner: o
description: d
entry: {count: {event: Order Completed, at_least: 1}}
""",
    )
    (message,) = _messages(path)
    assert "never expires" in message and ":1: error:" in message


def test_naming_convention_is_a_warning(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
name: cart people
version: 1
owner: o
description: d
entry: {since_last: {event: Product Added, less_than: 1d}}
""",
    )
    (message,) = _messages(path)
    assert "warning" in message and "naming convention" in message
    assert [a.name for a in load_audiences(path)] == ["cart people"]


def test_validate_command_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLES)]) == 0
    bad = _write(tmp_path, "name: [1]\n")
    assert main(["validate", str(bad)]) == 1
    assert f"{bad}:1: error:" in capsys.readouterr().out
