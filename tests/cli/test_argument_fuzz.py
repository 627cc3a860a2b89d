"""Hostile command lines: parsing never raises anything but argparse's exit.

Every sub-command's parser sees option soups with arbitrary values (text with control
characters, huge and non-finite numbers, negative durations, empty strings). Parsing
either succeeds with checked values or exits with status 2 after one line on stderr; the
argument types raise only ``ArgumentTypeError``. Only parsing runs: no command is
executed (``demo`` would start a broker).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamsync.cli import arguments, build_parser

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

_COMMANDS = [
    ["validate"],
    ["replay"],
    ["explain"],
    ["demo"],
    ["ingest"],
    ["ingest", "decode"],
    ["dev", "generate"],
    ["dev", "kafka", "start"],
    ["destinations", "rollout"],
    ["destinations", "pause"],
    ["destinations", "status"],
]
_OPTIONS = [
    "--audiences",
    "--events",
    "--until",
    "--allowed-lateness",
    "--customer",
    "--audience",
    "--quiet",
    "--customers",
    "--seed",
    "--bad-fraction",
    "--idle-timeout",
    "--config",
    "--bootstrap-servers",
    "--max-records",
    "--progress-interval",
    "--format",
    "--schema-registry",
    "--start",
    "--out",
    "--port",
    "--startup-timeout",
    "--timeout",
    "--version",
    "--percent",
    "--clear",
    "--destination",
]
_VALUES = st.one_of(
    st.sampled_from(
        [
            "",
            "-",
            "nan",
            "inf",
            "-inf",
            "-1",
            "0",
            "1e309",
            "9" * 400,
            "5m",
            "-5m",
            "90",
            "3651d",
            "yesterday",
            "2026-01-01",
            "2026-01-01T00:00:00Z",
            "0000-01-01T00:00:00Z",
            "webhook_json",
            "/",
            "/dev/null",
            "\x00",
            "0x10",
            "1_000",
        ]
    ),
    st.text(max_size=12),
    st.integers().map(str),
    st.floats().map(str),
)


@FUZZ
@given(
    st.sampled_from(_COMMANDS),
    st.lists(st.one_of(st.sampled_from(_OPTIONS), _VALUES), max_size=12),
)
def test_parsing_exits_2_with_one_line_or_succeeds(
    capsys: pytest.CaptureFixture[str], command: list[str], rest: list[str]
) -> None:
    capsys.readouterr()
    try:
        args = build_parser().parse_args([*command, *rest])
    except SystemExit as exit_:
        err = capsys.readouterr().err
        if exit_.code == 0:  # --help / --version
            return
        assert exit_.code == 2
        assert len(err.splitlines()) == 1, err
        assert err.startswith("streamsync"), err
        return
    for name in ("idle_timeout", "progress_interval", "startup_timeout", "bad_fraction", "timeout"):
        value = getattr(args, name, None)
        assert value is None or (math.isfinite(value) and value >= 0), (name, value)
    percent = getattr(args, "percent", None)
    assert percent is None or 0 <= percent <= 100, percent
    lateness = getattr(args, "allowed_lateness", None)
    assert lateness is None or lateness >= 0


_TYPES: list[Callable[[str], object]] = [
    arguments.port,
    arguments.positive_int,
    arguments.non_negative_int,
    arguments.int_between(1, 1_000_000),
    arguments.fraction,
    arguments.seconds(allow_zero=True),
    arguments.seconds(allow_zero=False, maximum=3600.0),
    arguments.rfc3339_ms,
    arguments.duration_ms,
]


@FUZZ
@given(st.sampled_from(_TYPES), st.one_of(_VALUES, st.text(max_size=40)))
def test_argument_types_raise_only_argument_type_errors(
    parse: Callable[[str], object], text: str
) -> None:
    try:
        parse(text)
    except argparse.ArgumentTypeError as exc:
        assert "\n" not in str(exc)
