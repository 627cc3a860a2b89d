"""Audience files: the shipped examples load, and bad definitions get file:line reasons."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamsync.audiences.loader import (
    AudienceDefinitionError,
    AudienceFileError,
    check_audiences,
    load_audiences,
)
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


# ----------------------------------------------------------------- what validate rejects

HEAD = "name: ACT__X__1d\nversion: 1\nowner: o\ndescription: d\n"


def _errors(tmp_path: Path, text: str) -> list[str]:
    return [m for m in _messages(_write(tmp_path, text)) if ": error: " in m]


@pytest.mark.parametrize(
    ("body", "line", "needle"),
    [
        # a bare number is ambiguous (it used to mean milliseconds)
        (
            "entry:\n  since_last:\n    event: E\n    at_least: 90\n    less_than: 1d\n",
            8,
            "90 has no unit",
        ),
        ("entry: {count: {event: E, within: 7}}\n", 5, "7 has no unit"),
        # negative durations: only meaningful before a captured offset
        (
            "entry: {since_last: {event: E, at_least: -1d, less_than: 1d}}\n",
            5,
            "at_least (without offset_by) must not be negative",
        ),
        ("entry: {count: {event: E, within: -7d}}\n", 5, "within must be a positive"),
        (
            "entry: {sum: {add: [{event: E, field: t}], within: -1d, at_least: 1}}\n",
            5,
            "within must be a positive",
        ),
        ("entry: {happened: {event: E}}\nsticky_for: -30d\n", 6, "sticky_for must be a positive"),
        # beyond the documented range (3650 days)
        ("entry: {since_last: {event: E, less_than: 3651d}}\n", 5, "out of range"),
        ("entry: {count: {event: E, within: 99999999999999999999w}}\n", 5, "out of range"),
        ("entry: {happened: {event: E}}\nsticky_for: 600w\n", 6, "out of range"),
        # numbers the engine cannot compare or sum
        (
            "entry: {sum: {add: [{event: E, field: t}], within: 1d, greater_than: .inf}}\n",
            5,
            "finite",
        ),
        ("entry: {count: {event: E, within: 1d, at_least: 1000001}}\n", 5, "100000"),
    ],
)
def test_rejected_values_have_file_line_and_reason(
    tmp_path: Path, body: str, line: int, needle: str
) -> None:
    errors = _errors(tmp_path, HEAD + body)
    path = tmp_path / "a.yaml"
    assert any(m.startswith(f"{path}:{line}: error:") and needle in m for m in errors), errors


def test_version_fits_the_delta_schema(tmp_path: Path) -> None:
    # Deltas carry the version as a 32-bit Avro int.
    body = "entry: {since_last: {event: E, less_than: 1d}}\n"
    (message,) = _errors(tmp_path, HEAD.replace("version: 1", "version: 2147483648") + body)
    assert message.startswith(f"{tmp_path / 'a.yaml'}:2: error:")
    assert "version must be at most 2147483647" in message
    path = _write(tmp_path, HEAD.replace("version: 1", "version: 2147483647") + body)
    assert [a.version for a in load_audiences(path)] == [2147483647]


def test_accepted_durations(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        HEAD + "entry: {since_last: {event: E, at_least: 0, less_than: 3650d}}\n",
    )
    (audience,) = load_audiences(path)
    assert audience.entry.since_last is not None
    assert audience.entry.since_last.at_least == 0
    assert audience.entry.since_last.less_than == 3650 * 86_400_000
    # Negative bounds before a captured offset stay valid (ACT__DueForReorder__7d).
    path = _write(
        tmp_path,
        HEAD + "entry: {since_last: {event: E, offset_by: {max_of: d}, at_least: -7d,"
        " less_than: 0d}}\n",
    )
    (audience,) = load_audiences(path)
    assert audience.entry.since_last is not None
    assert audience.entry.since_last.at_least == -7 * 86_400_000


def test_duplicate_keys_are_errors_at_the_second_line(tmp_path: Path) -> None:
    errors = _errors(
        tmp_path,
        """
name: ACT__First__1d
version: 1
owner: o
description: d
entry:
  since_last: {event: E, less_than: 1d, less_than: 2d}
name: ACT__Second__1d
""",
    )
    path = tmp_path / "a.yaml"
    assert f"{path}:7: error: duplicate key 'name' (first at line 1)" in errors
    assert f"{path}:6: error: duplicate key 'less_than' (first at line 6)" in errors
    assert len(errors) == 2, errors


def test_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
audiences:
  - &base {name: ACT__A__1d, version: 1, owner: o, description: d,
           entry: {since_last: {event: E, less_than: 1d}}}
  - <<: *base
    name: ACT__B__1d
""",
    )
    assert sorted(a.name for a in load_audiences(path)) == ["ACT__A__1d", "ACT__B__1d"]


def test_reference_errors_point_at_the_in_audience_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
audiences:
  - name: ACT__A__1
    version: 1
    owner: o
    description: d
    entry:
      all:
        - since_last: {event: E, less_than: 1d}
        - in_audience: ACT__B__1
  - name: ACT__B__1
    version: 1
    owner: o
    description: d
    entry:
      all:
        - since_last: {event: E, less_than: 1d}
        - not: {in_audience: ACT__Nope__1}
        - in_audience: ACT__A__1
""",
    )
    errors = _errors(tmp_path, path.read_text())
    assert any(
        m.startswith(f"{path}:18: error:") and "cycle: ACT__A__1 -> ACT__B__1 -> ACT__A__1" in m
        for m in errors
    ), errors
    assert any(
        m.startswith(f"{path}:17: error:") and "references 'ACT__Nope__1'" in m for m in errors
    ), errors


def _chain(length: int) -> str:
    lines = ["audiences:"]
    for i in range(length):
        entry = (
            "{since_last: {event: E, less_than: 1d}}"
            if i == 0
            else f"{{all: [{{in_audience: ACT__C__{i - 1}}}, {{count: {{event: E}}}}]}}"
        )
        lines.append(
            f"  - {{name: ACT__C__{i}, version: 1, owner: o, description: d, entry: {entry}}}"
        )
    return "\n".join(lines) + "\n"


def test_reference_chains_are_bounded_without_recursion(tmp_path: Path) -> None:
    assert load_audiences(_write(tmp_path, _chain(32)))
    errors = _errors(tmp_path, _chain(3000))  # deeper than the interpreter's stack
    assert len(errors) == 1, errors[:3]
    assert "ACT__C__32" in errors[0] and "more than 32 in_audience references" in errors[0]


def test_trait_audiences_exit_on_a_later_identify_but_not_happened_never_expires(
    tmp_path: Path,
) -> None:
    # A trait-only audience ends when an identify changes the trait (the canonical
    # SUP__SubscriptionActive): it has a way to exit and is accepted.
    path = _write(tmp_path, HEAD + "entry: {trait: {name: plan, equals: gold}}\n")
    assert [a.name for a in load_audiences(path)] == ["ACT__X__1d"]
    # "not happened" is true at every instant but one: nothing ever ends it.
    (message,) = _errors(tmp_path, HEAD + "entry: {not: {happened: {event: E}}}\n")
    assert "never expires" in message and "not happened" in message


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (HEAD + "entry: {trait: {name: t, equals: 2026-13-45}}\n", "cannot read this value"),
        (HEAD + "entry: !!python/object:os.system {}\n", "constructor for the tag"),
        (HEAD + "entry: {since_last: [\n", "not valid YAML"),
        ("- a\n---\n- b\n", "single document"),
    ],
)
def test_yaml_problems_are_validation_errors_with_lines(
    tmp_path: Path, text: str, needle: str
) -> None:
    (message,) = _errors(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'a.yaml'}:") and needle in message


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n"
                for p, c in zip("abcdefg", "bcdefgh", strict=True)
            ),
            "aliases expand",
        ),
        ("a: &a [*a]\n", "refers to itself"),
        (
            "a: &a " + "[" * 40 + "1" + "]" * 40 + "\nb: &b [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[*a]]]]]]]"
            "]]]]]]]]]]]]]]]]]]]]]]]\n",
            "nested more than 64",
        ),
    ],
    ids=["billion-laughs", "self-reference", "deep-through-aliases"],
)
def test_hostile_aliases_are_file_errors(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(AudienceFileError, match=needle):
        check_audiences(_write(tmp_path, text))


# ------------------------------------------------------------------------ parsed once


def test_a_large_file_is_read_and_parsed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    import streamsync.audiences.loader as loader
    from streamsync.strict_yaml import parse_yaml

    text = _write(tmp_path, "").parent / "many.yaml"
    blocks = [
        f"  - name: ACT__Many__{i}\n    version: 1\n    owner: o\n    description: d\n"
        f"    entry:\n      since_last: {{event: E{i}, at_least: 90m, less_than: 7d}}\n"
        for i in range(2000)
    ]
    text.write_text("audiences:\n" + "".join(blocks), "utf-8")
    assert text.stat().st_size > 200_000

    calls = {"parse": 0, "compose": 0, "open": 0}
    real_compose = yaml.composer.Composer.compose_document
    real_open = Path.open

    def counted_parse(raw: bytes | str) -> object:
        calls["parse"] += 1
        return parse_yaml(raw)

    def counted_compose(self: yaml.composer.Composer) -> object:
        calls["compose"] += 1
        return real_compose(self)

    def counted_open(self: Path, *args: object, **kwargs: object) -> object:
        if self == text:
            calls["open"] += 1
        return real_open(self, *args, **kwargs)  # type: ignore[call-overload]

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a second parse of the file")

    monkeypatch.setattr(loader, "parse_yaml", counted_parse)
    monkeypatch.setattr(yaml.composer.Composer, "compose_document", counted_compose)
    monkeypatch.setattr(Path, "open", counted_open)
    monkeypatch.setattr(Path, "read_text", forbidden)
    monkeypatch.setattr(Path, "read_bytes", forbidden)
    for name in ("safe_load", "load", "compose", "compose_all", "parse"):
        monkeypatch.setattr(yaml, name, forbidden)

    audiences, problems = check_audiences(text)
    assert len(audiences) == 2000 and problems == []
    assert calls == {"parse": 1, "compose": 1, "open": 1}


def test_a_null_condition_is_an_error_not_a_crash(tmp_path: Path) -> None:
    # Found by tests/fuzz: "exit: {occurred_since_last: null}" passed validation and
    # failed in the compiler.
    errors = _errors(
        tmp_path,
        HEAD + "entry: {happened: {event: E}}\nsticky_for: 1d\nexit: {occurred_since_last: null}\n",
    )
    assert any(":7: error:" in m and "occurred_since_last needs a value" in m for m in errors)


def test_an_error_at_the_end_of_the_file_is_on_its_last_line(tmp_path: Path) -> None:
    (message,) = _errors(tmp_path, "[")
    assert message.startswith(f"{tmp_path / 'a.yaml'}:1: error: not valid YAML")


def test_an_empty_tagged_int_is_a_yaml_error(tmp_path: Path) -> None:
    (message,) = _errors(tmp_path, "!!int ")
    assert "cannot read this value" in message


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            "{trait: {name: x, equals: [1]}}",
            ["entry.trait.equals: should be a string, number, boolean or null"],
        ),
        (
            "{since_last: {event: E, less_than: 1d, where: {x: [1]}}}",
            [
                "entry.since_last.where.x: should be a string, number, boolean, null or a "
                "comparison such as {gt: 5}"
            ],
        ),
        (
            "{since_last: {event: E, less_than: 1d, where: {x: {gt: a, colour: 1}}}}",
            [
                "entry.since_last.where.x.gt: Input should be a valid number, unable to parse "
                "string as a number",
                "entry.since_last.where.x: unknown key 'colour'",
            ],
        ),
        (
            "{since_last: {event: E, less_than: 1d, where: {x: {in: [[1]]}}}}",
            ["entry.since_last.where.x.in.0: should be a string, number, boolean or null"],
        ),
        (
            "{since_last: {event: E, less_than: 1d, where: {x: {}}}}",
            ["entry.since_last.where.x: a comparison needs an operator"],
        ),
    ],
)
def test_a_bad_value_in_a_union_is_one_problem(
    tmp_path: Path, entry: str, expected: list[str]
) -> None:
    errors = _errors(tmp_path, HEAD + f"entry: {entry}\n")
    prefix = f"{tmp_path / 'a.yaml'}:5: error: audience 'ACT__X__1d': "
    assert len(errors) == len(expected), errors
    for message, text in zip(errors, expected, strict=True):
        assert message.startswith(prefix + text), (message, text)


def test_yaml_errors_name_where_the_construct_began(tmp_path: Path) -> None:
    (message,) = _errors(tmp_path, "a: [1,\n\n  2\n")
    assert message == (
        f"{tmp_path / 'a.yaml'}:3: error: not valid YAML: while parsing a flow sequence "
        "(line 1): did not find expected ',' or ']'"
    )


def test_keys_next_to_an_audiences_list_are_errors(tmp_path: Path) -> None:
    errors = _errors(
        tmp_path,
        "owner: team@example.com\naudiences:\n"
        "  - {name: ACT__A__1d, version: 1, owner: o, description: d,\n"
        "     entry: {since_last: {event: E, less_than: 1d}}}\n",
    )
    assert errors == [f"{tmp_path / 'a.yaml'}:1: error: unknown key 'owner' next to audiences:"]


# ------------------------------------------------------------ rules that contradict

STICKY_WITH_EXIT = (
    HEAD
    + "entry: {happened: {event: Order Completed}}\n"  # line 5
    + "exit: {occurred_since_last: {event: Order Refunded, since: {event: Order Completed}}}\n"
    + "sticky_for: 3d\n"  # line 7
)


def test_sticky_for_with_an_exit_must_say_which_wins(tmp_path: Path) -> None:
    (message,) = _errors(tmp_path, STICKY_WITH_EXIT)
    assert message.startswith(f"{tmp_path / 'a.yaml'}:7: error: audience 'ACT__X__1d': ")
    assert "sticky_for and an exit (line 6) contradict" in message
    assert "exit_during_sticky: leave" in message and "or stay" in message
    for choice in ("leave", "stay"):
        path = _write(tmp_path, STICKY_WITH_EXIT + f"exit_during_sticky: {choice}\n")
        (audience,) = load_audiences(path)
        assert audience.exit_during_sticky == choice


def test_sticky_for_without_an_exit_needs_no_choice(tmp_path: Path) -> None:
    # As before exit_during_sticky existed (ACT__StarterKit__CrossSell__30d).
    (audience,) = load_audiences(
        _write(tmp_path, HEAD + "entry: {happened: {event: E}}\nsticky_for: 30d\n")
    )
    assert audience.sticky_for == 30 * 86_400_000 and audience.exit_during_sticky is None


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (
            "entry: {since_last: {event: E, less_than: 1d}}\nexit_during_sticky: leave\n",
            "exit_during_sticky has no effect without sticky_for",
        ),
        (
            "entry: {happened: {event: E}}\nsticky_for: 1d\nexit_during_sticky: stay\n",
            "exit_during_sticky has no effect without an exit",
        ),
    ],
)
def test_exit_during_sticky_where_it_decides_nothing(
    tmp_path: Path, body: str, needle: str
) -> None:
    (message,) = _errors(tmp_path, HEAD + body)
    line = 4 + body.count("\n")  # the last line of the body
    assert f"a.yaml:{line}: error:" in message and needle in message, message


def test_exit_during_sticky_takes_leave_or_stay(tmp_path: Path) -> None:
    (message,) = _errors(tmp_path, STICKY_WITH_EXIT + "exit_during_sticky: wins\n")
    assert "a.yaml:8: error:" in message and "exit_during_sticky" in message, message


ENTRY = "{since_last: {event: E, less_than: 1d}}"
TRAIT = "{trait: {name: s, equals: a}}"


@pytest.mark.parametrize(
    ("entry", "exit_", "needle"),
    [
        (ENTRY, ENTRY, "the exit is the same condition as the entry, so no customer"),
        # double negation is the same condition
        (ENTRY, "{not: {not: " + ENTRY + "}}", "the exit is the same condition as the entry"),
        ("{all: [" + ENTRY + ", " + TRAIT + "]}", TRAIT, "the exit holds whenever the entry"),
        (ENTRY, "{any: [" + TRAIT + ", " + ENTRY + "]}", "the exit holds whenever the entry"),
        (ENTRY, "{any: [" + TRAIT + ", {not: " + TRAIT + "}]}", "the exit is always true"),
        (ENTRY, "{not: {all: [" + TRAIT + ", {not: " + TRAIT + "}]}}", "the exit is always true"),
        (ENTRY, "{all: [" + TRAIT + ", {not: " + TRAIT + "}]}", "the exit can never be true"),
        (
            "{all: [" + ENTRY + ", {not: " + TRAIT + "}]}",
            TRAIT,
            "the exit can never end a membership: the entry already requires it not to hold",
        ),
        # De Morgan: not any [a, b] requires not b
        (
            "{all: [" + ENTRY + ", {not: {any: [{in_audience: ACT__Y__1d}, " + TRAIT + "]}}]}",
            TRAIT,
            "the exit can never end a membership",
        ),
    ],
)
def test_an_exit_that_contradicts_the_entry_is_refused_at_its_line(
    tmp_path: Path, entry: str, exit_: str, needle: str
) -> None:
    _write(tmp_path, HEAD + f"entry: {entry}\nexit: {exit_}\n")
    # The audience one case references, in a file of its own that is valid.
    (tmp_path / "b.yaml").write_text(HEAD.replace("ACT__X__1d", "ACT__Y__1d") + f"entry: {ENTRY}\n")
    messages = _messages(tmp_path)
    assert len(messages) == 1, messages
    assert f"a.yaml:6: error: audience 'ACT__X__1d': {needle}" in messages[0], messages


def test_an_entry_that_can_never_be_true_is_refused(tmp_path: Path) -> None:
    body = "entry: {all: [" + ENTRY + ", {not: " + ENTRY + "}]}\n"
    (message,) = _errors(tmp_path, HEAD + body)
    assert "a.yaml:5: error:" in message and "the entry can never be true" in message


@pytest.mark.parametrize(
    ("entry", "exit_", "extra"),
    [
        # the canonical shape: a cart, and an order after it
        (
            "{since_last: {event: Product Added, at_least: 90m, less_than: 7d}}",
            "{occurred_since_last: {event: Order Completed, since: {event: Product Added}}}",
            "",
        ),
        # the same event with another window is another condition
        (ENTRY, "{since_last: {event: E, less_than: 2d}}", ""),
        # part of the exit is not the entry
        (ENTRY, "{all: [" + ENTRY + ", " + TRAIT + "]}", ""),
        # leaving, an exit the entry excludes still ends sticky periods
        (
            "{all: [{happened: {event: E}}, {not: " + TRAIT + "}]}",
            TRAIT,
            "sticky_for: 1d\nexit_during_sticky: leave\n",
        ),
    ],
)
def test_exits_that_can_take_effect_are_accepted(
    tmp_path: Path, entry: str, exit_: str, extra: str
) -> None:
    path = _write(tmp_path, HEAD + f"entry: {entry}\nexit: {exit_}\n" + extra)
    assert _messages(path) == []


def test_a_reference_cycle_names_the_file_and_line_of_the_reference(tmp_path: Path) -> None:
    # Across two files: the reference that closes the cycle is reported in its own file,
    # at its own line, with the whole cycle.
    (tmp_path / "a.yaml").write_text(
        HEAD.replace("ACT__X__1d", "ACT__A__1d")
        + "entry:\n"  # line 5
        + "  all:\n"
        + "    - {since_last: {event: E, less_than: 1d}}\n"
        + "    - {in_audience: ACT__B__1d}\n"  # line 8
    )
    (tmp_path / "b.yaml").write_text(
        HEAD.replace("ACT__X__1d", "ACT__B__1d")
        + "entry: {since_last: {event: E, less_than: 1d}}\n"
        + "exit: {in_audience: ACT__A__1d}\n"  # line 6
    )
    messages = _messages(tmp_path)
    assert messages == [
        f"{tmp_path / 'b.yaml'}:6: error: audience references form a cycle: "
        "ACT__A__1d -> ACT__B__1d -> ACT__A__1d"
    ], messages
    with pytest.raises(AudienceDefinitionError):
        load_audiences(tmp_path)


def test_an_audience_that_references_itself_is_a_cycle_at_that_line(tmp_path: Path) -> None:
    body = (
        "entry:\n  any:\n"  # lines 5-6
        "    - {since_last: {event: E, less_than: 1d}}\n"
        "    - in_audience: ACT__X__1d\n"  # line 8
    )
    (message,) = _errors(tmp_path, HEAD + body)
    assert message == (
        f"{tmp_path / 'a.yaml'}:8: error: audience references form a cycle: "
        "ACT__X__1d -> ACT__X__1d"
    )
