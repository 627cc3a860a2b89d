"""Fuzzing the audience definition loader: whatever the file holds, the loader answers
with its documented outcomes only.

* ``check_audiences`` returns audiences and problems, or raises ``AudienceFileError``
  (the file cannot be read as YAML text); ``load_audiences`` raises
  ``AudienceDefinitionError`` for problems. Nothing else escapes: no ``RecursionError``,
  ``ValueError``, ``OverflowError``, ``TypeError`` or pydantic error.
* Every message is one line, and every problem points at a line of the file.
* Whatever loads also compiles into an engine program (validation leaves nothing for
  the compiler to trip on).

Inputs: arbitrary bytes, arbitrary text, soups of YAML tokens (anchors, aliases, tags,
merge keys, flow and block nesting), and near-valid audiences whose values are replaced
by hostile ones (huge and non-finite numbers, bare and signed durations, deep nesting).
Bounded: a few hundred examples per test, a few seconds in all.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamsync.audiences.compiler import compile_audiences
from streamsync.audiences.durations import MAX_DURATION, format_duration, parse_duration
from streamsync.audiences.loader import (
    AudienceDefinitionError,
    AudienceFileError,
    check_audiences,
    load_audiences,
)

FUZZ = settings(
    max_examples=int(os.environ.get("STREAMSYNC_FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


def check(raw: bytes) -> None:
    """The properties above, for one file's content."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.yaml"
        path.write_bytes(raw)
        text = raw.decode("utf-8", "replace")
        lines = max(raw.count(b"\n"), len(text.splitlines())) + 1
        try:
            audiences, problems = check_audiences(path)
        except AudienceFileError as exc:
            message = str(exc)
            assert "\n" not in message and message.startswith(str(path)), message
            return
        for problem in problems:
            assert problem.path == str(path)
            assert 0 <= problem.line <= lines, (problem, lines)
            assert "\n" not in problem.message, problem
        try:
            loaded = load_audiences(path)
        except AudienceDefinitionError as exc:
            assert exc.problems == [p for p in problems if p.severity == "error"]
            return
        assert [a.name for a in loaded] == [a.name for a in audiences]
        compile_audiences(loaded)


@FUZZ
@given(st.binary(max_size=2_000))
def test_arbitrary_bytes(raw: bytes) -> None:
    check(raw)


@FUZZ
@given(st.text(max_size=1_000))
def test_arbitrary_text(text: str) -> None:
    check(text.encode("utf-8", "surrogatepass"))


_TOKENS = [
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    ": ",
    "- ",
    "? ",
    "\n",
    "\n  ",
    "\n    ",
    "  ",
    "#x",
    "&a ",
    "&b ",
    "*a",
    "*b",
    "<<: *a",
    "<<: ",
    "!!str ",
    "!!int ",
    "!!float ",
    "!!binary ",
    "!!map ",
    "!!seq ",
    "!!set ",
    "!!omap ",
    "!!timestamp ",
    "!!python/object ",
    "!x ",
    "'",
    '"',
    "|",
    ">",
    "---",
    "...",
    "%YAML 1.1\n",
    "~",
    "null",
    "true",
    "1e309",
    ".nan",
    "-.inf",
    "0x1F",
    "0o17",
    "1_000",
    "2026-13-45",
    "2026-01-01T00:00:00Z",
    "9" * 30,
    "name",
    "version",
    "owner",
    "description",
    "entry",
    "exit",
    "sticky_for",
    "holdout",
    "audiences",
    "all",
    "any",
    "not",
    "since_last",
    "happened",
    "occurred_since_last",
    "count",
    "sum",
    "open_items",
    "trait",
    "in_audience",
    "event",
    "kind",
    "where",
    "at_least",
    "less_than",
    "within",
    "offset_by",
    "max_of",
    "per",
    "add",
    "subtract",
    "field",
    "greater_than",
    "key",
    "open",
    "close",
    "equals",
    "percent",
    "90m",
    "-7d",
    "0",
    "90",
    "3651d",
    "ACT__A__1",
    "ACT__B__1",
    "E",
]


@FUZZ
@given(st.lists(st.sampled_from(_TOKENS), max_size=200))
def test_yaml_token_soup(tokens: list[str]) -> None:
    check("".join(tokens).encode())


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            "90m",
            "7d",
            "-7d",
            "0",
            "0d",
            "90",
            "3650d",
            "3651d",
            "1ms",
            "-0",
            " 5 s",
            "1.5h",
            "99999999999999999999999w",
            "ACT__A__1",
            "ACT__B__1",
            "E",
            "",
            "x" * 300,
        ]
    ),
    st.text(max_size=10),
)


def _replace_somewhere(value: Any, draw: Any, depth: int = 0) -> Any:
    """``value`` with one leaf or branch replaced by something hostile."""
    if isinstance(value, dict) and value and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(value)))
        return {**value, key: _replace_somewhere(value[key], draw, depth + 1)}
    if isinstance(value, list) and value and draw(st.booleans()):
        index = draw(st.integers(0, len(value) - 1))
        return [
            *value[:index],
            _replace_somewhere(value[index], draw, depth + 1),
            *value[index + 1 :],
        ]
    return draw(
        st.one_of(
            _SCALARS,
            st.lists(_SCALARS, max_size=3),
            st.dictionaries(st.sampled_from(_TOKENS[60:]), _SCALARS, max_size=3),
            st.integers(1, 200).map(lambda n: _nest(n)),
        )
    )


def _nest(depth: int) -> Any:
    condition: Any = {"since_last": {"event": "E", "less_than": "1d"}}
    for level in range(depth):
        condition = {"not": condition} if level % 2 else {"all": [condition]}
    return condition


def _audience(name: str, ref: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "all": [
            {"since_last": {"event": "E", "at_least": "90m", "less_than": "7d"}},
            {"count": {"event": "V", "at_least": 2, "within": "7d", "per": "p"}},
            {"sum": {"add": [{"event": "O", "field": "t"}], "within": "30d", "at_least": 5}},
            {"trait": {"name": "s", "equals": "a"}},
            {"open_items": {"key": "k", "open": {"event": "A"}, "close": {"event": "B"}}},
        ]
    }
    if ref is not None:
        entry["all"].append({"not": {"in_audience": ref}})
    return {
        "name": name,
        "version": 1,
        "owner": "o",
        "description": "d",
        "entry": entry,
        "exit": {"occurred_since_last": {"event": "O", "since": {"event": "E"}}},
        "holdout": {"percent": 10},
    }


@FUZZ
@given(st.data())
def test_near_valid_audiences_with_hostile_values(data: st.DataObject) -> None:
    audiences = [_audience("ACT__A__1", None), _audience("ACT__B__1", "ACT__A__1")]
    mutated = [_replace_somewhere(a, data.draw) for a in audiences]
    check(yaml.safe_dump({"audiences": mutated}, allow_unicode=True).encode())


def test_the_unmutated_audiences_load_and_compile() -> None:
    # The fuzzed skeleton is valid, so the mutations above are what make files invalid.
    text = yaml.safe_dump(
        {"audiences": [_audience("ACT__A__1", None), _audience("ACT__B__1", "ACT__A__1")]}
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ok.yaml"
        path.write_text(text, "utf-8")
        assert [a.name for a in load_audiences(path)] == ["ACT__A__1", "ACT__B__1"]


@FUZZ
@given(
    st.one_of(
        st.text(max_size=30),
        st.integers(),
        st.from_regex(r"\s*-?\s*[0-9]{1,22}\s*(ms|s|m|h|d|w)\s*", fullmatch=True),
    )
)
def test_durations_parse_within_range_or_raise_value_error(text: str | int) -> None:
    try:
        value = parse_duration(text)
    except ValueError as exc:
        assert "\n" not in str(exc)
        return
    assert abs(value) <= MAX_DURATION
    assert parse_duration(format_duration(value)) == value
