"""Every user mistake ends in one line, ``streamsync <command>: <problem>``, and exit 2.

Each case is a mistake a user makes on an ordinary day. The check is the same for all: the
exit status is 2, stderr is exactly one line naming the command and the problem, and no
traceback. A few run through the installed ``streamsync`` script as a user would.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from streamsync.cli import arguments, main

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = str(REPO / "examples" / "audiences")
SECRET = "hunter2-not-for-logs"


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    """Exit status and stderr of ``streamsync argv``, whether argparse or the command
    itself found the mistake."""
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exit_:
        rc = int(exit_.code or 0)
    return rc, capsys.readouterr().err


def assert_one_line(rc: int, err: str, command: str, *needles: str) -> None:
    assert rc == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"streamsync {command}: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, err)


@pytest.fixture()
def events(tmp_path: Path) -> str:
    path = tmp_path / "events.jsonl"
    path.write_text("", "utf-8")
    return str(path)


# ------------------------------------------------------------------------------ validate


def test_validate_binary_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "a.yaml"
    path.write_bytes(bytes(range(256)) * 8)
    rc, err = run(capsys, ["validate", str(path)])
    assert_one_line(rc, err, "validate", str(path), "not UTF-8")


def test_validate_text_with_control_characters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "a.yaml"
    path.write_bytes(b"name: x\nversion: 1\x00\x01\n")
    rc, err = run(capsys, ["validate", str(path)])
    assert_one_line(rc, err, "validate", f"{path}:2:", "control characters")


def test_validate_latin1_file_names_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "a.yaml"
    path.write_bytes(b"name: ACT__X__1\nowner: caf\xe9\n")
    rc, err = run(capsys, ["validate", str(path)])
    assert_one_line(rc, err, "validate", f"{path}:2:", "not UTF-8")


@pytest.mark.parametrize(
    "text",
    [
        "a:\n" + "".join("  " * i + "- \n" for i in range(3000)),  # block style
        "[" * 5000 + "]" * 5000,  # flow style
        "{a: " * 5000 + "1" + "}" * 5000,
    ],
    ids=["block", "flow-list", "flow-map"],
)
def test_validate_yaml_nested_thousands_deep(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(text, "utf-8")
    rc, err = run(capsys, ["validate", str(path)])
    assert_one_line(rc, err, "validate", str(path), "nested more than 64 levels")


def test_validate_missing_path_and_empty_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, err = run(capsys, ["validate", str(tmp_path / "nope.yaml")])
    assert_one_line(rc, err, "validate", "nope.yaml", "no such file")
    rc, err = run(capsys, ["validate", str(tmp_path)])
    assert_one_line(rc, err, "validate", str(tmp_path), "no audience files")


# ------------------------------------------------------------------------ replay/explain


@pytest.mark.parametrize("command", ["replay", "explain"])
def test_events_missing_or_a_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    extra = ["--customer", "c1"] if command == "explain" else []
    base = [command, "--audiences", EXAMPLES, *extra, "--events"]
    rc, err = run(capsys, [*base, str(tmp_path / "missing.jsonl")])
    assert_one_line(rc, err, command, "--events", "missing.jsonl", "No such file")
    rc, err = run(capsys, [*base, str(tmp_path)])
    assert_one_line(rc, err, command, "--events", "is a directory")


@pytest.mark.parametrize(
    ("option", "needle"),
    [
        ("--until=yesterday", "not an RFC 3339 timestamp"),
        ("--until=", "not an RFC 3339 timestamp"),
        ("--until=2026-01-01T00:00:00", "no timezone"),
        ("--allowed-lateness=banana", "not a duration"),
        ("--allowed-lateness=-5m", "must not be negative"),
        ("--allowed-lateness=90", "not a duration"),
        ("--allowed-lateness=99999d", "out of range"),
    ],
)
@pytest.mark.parametrize("command", ["replay", "explain"])
def test_bad_until_and_lateness(
    capsys: pytest.CaptureFixture[str], events: str, command: str, option: str, needle: str
) -> None:
    extra = ["--customer", "c1"] if command == "explain" else []
    rc, err = run(capsys, [command, "--audiences", EXAMPLES, "--events", events, *extra, option])
    assert_one_line(rc, err, command, option.split("=")[0], needle)


def test_missing_audiences_path(capsys: pytest.CaptureFixture[str], events: str) -> None:
    rc, err = run(capsys, ["replay", "--audiences", "/no/such/dir", "--events", events])
    assert_one_line(rc, err, "replay", "/no/such/dir")


def test_unknown_audience_in_explain(capsys: pytest.CaptureFixture[str], events: str) -> None:
    argv = ["explain", "--audiences", EXAMPLES, "--events", events, "--customer", "c1"]
    rc, err = run(capsys, [*argv, "--audience", "ACT__Nope__1d"])
    assert_one_line(rc, err, "explain", "no audience named 'ACT__Nope__1d'")


def test_invalid_audiences_list_every_problem_then_one_summary_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], events: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: ACT__X__1d\nversion: 1\nowner: o\ndescription: d\n"
        "entry: {since_last: {event: E, at_least: 90, less_than: 1d}}\nname: ACT__Y__1d\n",
        "utf-8",
    )
    rc, err = run(capsys, ["replay", "--audiences", str(bad), "--events", events])
    assert rc == 2
    *problems, last = err.splitlines()
    assert problems and all(p.startswith(f"{bad}:") for p in problems), err
    assert any(p.startswith(f"{bad}:6: error: duplicate key 'name'") for p in problems), err
    assert last == f"streamsync replay: {len(problems)} error(s) in the audience definitions"


# -------------------------------------------------------------------------------- ingest


def _config(tmp_path: Path, text: str | bytes) -> str:
    path = tmp_path / "streamsync.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, "utf-8")
    return str(path)


TOPICS = "ingest:\n  topics: [{name: a, format: webhook_json}]\n"


def test_ingest_config_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(tmp_path, TOPICS.encode() + b"# caf\xe9\n")
    rc, err = run(capsys, ["ingest", "--config", path])
    assert_one_line(rc, err, "ingest", path, "line 3", "not UTF-8")


def test_ingest_missing_schema_registry_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path, TOPICS + "  schema_registry_dir: schemas/nope\n")
    rc, err = run(capsys, ["ingest", "--config", path])
    expected = str(tmp_path / "schemas" / "nope")
    assert_one_line(rc, err, "ingest", "schema_registry_dir", expected, "does not exist")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (f"{{no.such.setting: {SECRET}}}", "'no.such.setting' is not a librdkafka setting"),
        (f"{{linger.ms: {SECRET}}}", "rejects the value of 'linger.ms'"),
    ],
)
def test_ingest_bad_librdkafka_setting_names_the_key_not_the_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, needle: str
) -> None:
    path = _config(tmp_path, f"kafka:\n  extra: {extra}\n{TOPICS}")
    rc, err = run(capsys, ["ingest", "--config", path])
    assert_one_line(rc, err, "ingest", "kafka.extra", needle)
    assert SECRET not in err


def test_ingest_config_missing_or_not_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, err = run(capsys, ["ingest", "--config", str(tmp_path / "nope.yaml")])
    assert_one_line(rc, err, "ingest", "nope.yaml", "cannot read")
    rc, err = run(capsys, ["ingest", "--config", str(tmp_path)])
    assert_one_line(rc, err, "ingest", "is a directory")
    rc, err = run(capsys, ["ingest"])
    assert_one_line(rc, err, "ingest", "--config FILE is required")


@pytest.mark.parametrize(
    "option", ["--idle-timeout=nan", "--idle-timeout=-1", "--max-records=0", "--max-records=x"]
)
def test_ingest_bad_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    rc, err = run(capsys, ["ingest", "--config", _config(tmp_path, TOPICS), option])
    assert_one_line(rc, err, "ingest", option.split("=")[0])


@pytest.mark.parametrize(
    ("command", "option"),
    [
        ("evaluate", "--progress-interval=-1"),
        ("evaluate", "--progress-interval=nan"),
        ("evaluate", "--progress-interval=0"),
        ("deliver", "--idle-timeout=nan"),
        ("deliver", "--idle-timeout=inf"),
        ("deliver", "--idle-timeout=-1"),
    ],
)
def test_evaluate_and_deliver_bad_intervals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, option: str
) -> None:
    # Refused while parsing, before the configuration is read or a client is made.
    extra = ["--destination", "braze"] if command == "deliver" else []
    rc, err = run(capsys, [command, "--config", _config(tmp_path, TOPICS), *extra, option])
    assert_one_line(rc, err, command, option.split("=")[0])


def test_ingest_decode_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "nope.jsonl")
    rc, err = run(capsys, ["ingest", "decode", "--format", "webhook_json", missing])
    assert_one_line(rc, err, "ingest decode", missing, "No such file")


@pytest.mark.parametrize(
    ("registry", "needle"),
    [("nope", "does not exist"), ("bad.yaml", "not valid YAML"), ("list.yaml", "invalid")],
)
def test_ingest_decode_bad_schema_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], registry: str, needle: str
) -> None:
    (tmp_path / "bad.yaml").write_text("1: [unclosed\n", "utf-8")
    (tmp_path / "list.yaml").write_text("- a\n", "utf-8")
    body = tmp_path / "body.avro"
    body.write_bytes(b"\x00")
    argv = ["ingest", "decode", "--format", "pipelines_avro", "--schema-registry"]
    rc, err = run(capsys, [*argv, str(tmp_path / registry), str(body)])
    assert_one_line(rc, err, "ingest decode", "--schema-registry", registry, needle)


# ----------------------------------------------------------------------------------- dev


def test_generate_into_a_missing_directory_or_onto_a_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["dev", "generate", "--customers", "1", "--events", "1", "--out"]
    rc, err = run(capsys, [*argv, str(tmp_path / "no" / "such" / "x.jsonl")])
    assert_one_line(rc, err, "dev generate", "--out", "does not exist")
    rc, err = run(capsys, [*argv, str(tmp_path)])
    assert_one_line(rc, err, "dev generate", "--out", "is a directory")
    assert list(tmp_path.iterdir()) == []


def test_a_file_error_while_running_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    target = str(tmp_path / "x.jsonl")

    def disk_full(*args: object, **kwargs: object) -> int:
        raise OSError(28, "No space left on device", target)

    monkeypatch.setattr("streamsync.dev.synthetic.write_jsonl", disk_full)
    argv = ["dev", "generate", "--customers", "1", "--events", "1", "--out", target]
    rc, err = run(capsys, argv)
    assert_one_line(rc, err, "dev generate", target, "No space left on device")


# ---------------------------------------------------------------------------------- demo


@pytest.mark.parametrize(
    ("option", "needle"),
    [
        ("--events=100000000", "more than 1,000,000"),
        ("--customers=50000000", "more than 1,000,000"),
        ("--customers=0", "at least 1"),
        ("--idle-timeout=nan", "not a finite number"),
        ("--idle-timeout=inf", "not a finite number"),
        ("--idle-timeout=-1", "must be more than 0"),
        ("--idle-timeout=0", "must be more than 0"),
        ("--idle-timeout=1e9", "at most 3,600"),
    ],
)
def test_demo_bounds(capsys: pytest.CaptureFixture[str], option: str, needle: str) -> None:
    rc, err = run(capsys, ["demo", option])
    assert_one_line(rc, err, "demo", option.split("=")[0], needle)


# ------------------------------------------------------------------------ argument types


def test_argument_types_accept_good_values(tmp_path: Path) -> None:
    assert arguments.rfc3339_ms("1970-01-01T00:00:01Z") == 1000
    assert arguments.rfc3339_ms("1970-01-01T01:00:00+01:00") == 0
    assert arguments.duration_ms("5m") == 300_000
    assert arguments.duration_ms("0") == 0
    assert arguments.seconds(allow_zero=True)("0") == 0.0
    assert arguments.seconds(allow_zero=False)("2.5") == 2.5
    assert arguments.int_between(1, 10)("10") == 10
    assert arguments.check_output_file("-", "--out") == "-"
    assert arguments.check_output_file(str(tmp_path / "x"), "--out") == str(tmp_path / "x")
    file = tmp_path / "f"
    file.write_text("x")
    assert arguments.check_input_file(str(file), "FILE") == file


def test_path_checks_name_the_option_and_path(tmp_path: Path) -> None:
    with pytest.raises(arguments.UserError, match=r"^--events .*nope: No such file"):
        arguments.check_input_file(tmp_path / "nope", "--events")
    with pytest.raises(arguments.UserError, match="is a directory"):
        arguments.check_input_file(tmp_path, "--events")
    with pytest.raises(arguments.UserError, match="not a regular file"):
        arguments.check_input_file("/dev/null", "--events")


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (arguments.rfc3339_ms, "0000-01-01T00:00:00Z"),
        (arguments.rfc3339_ms, "tomorrow"),
        (arguments.duration_ms, "1.5h"),
        (arguments.seconds(allow_zero=True), "NaN"),
        (arguments.seconds(allow_zero=True), "-0.5"),
        (arguments.int_between(1, 10), "11"),
        (arguments.int_between(1, 10), "1e3"),
        (arguments.port, "65536"),
        (arguments.port, "http"),
        (arguments.fraction, "inf"),
    ],
)
def test_argument_types_reject_bad_values(parse: Callable[[str], object], text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse(text)


# ---------------------------------------------------------------------- as a user runs it


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "/dev/null/x"],
        ["replay", "--audiences", EXAMPLES, "--events", "/", "--until", "yesterday"],
        ["replay", "--audiences", EXAMPLES, "--events", "/no/such/file.jsonl"],
        ["demo", "--idle-timeout", "inf"],
    ],
)
def test_installed_script_prints_one_line_and_exits_2(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streamsync", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"streamsync {argv[0]}: ")
    assert done.stdout == ""


def test_control_characters_in_an_argument_do_not_break_the_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc, err = run(capsys, ["demo", "--events", "1\n2\x1b[31m\x85"])
    assert_one_line(rc, err, "demo", "--events", "\\x1b")
    assert "\x1b" not in err


def test_interrupt_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def interrupted(*args: object, **kwargs: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr("streamsync.dev.synthetic.write_jsonl", interrupted)
    argv = ["dev", "generate", "--customers", "1", "--events", "1"]
    rc, err = run(capsys, [*argv, "--out", str(tmp_path / "x.jsonl")])
    assert (rc, err) == (130, "streamsync dev generate: interrupted\n")


def test_a_closed_pipe_ends_quietly() -> None:
    # ``streamsync dev generate ... | head -1``: the reader leaves after one line.
    argv = ["dev", "generate", "--customers", "5", "--events", "200000"]
    with subprocess.Popen(
        [sys.executable, "-m", "streamsync", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().startswith(b"{")
        proc.stdout.close()
        err = proc.stderr.read().decode()
        rc = proc.wait(timeout=60)
    assert rc == 1, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.parametrize("command", ["fetch", "start"])
@pytest.mark.parametrize("version", ["../../../tmp/x", "4.1.1/../../x", "4.1", "4.1.1\n", "latest"])
def test_kafka_version_must_be_a_release_number(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    command: str,
    version: str,
) -> None:
    # The version names a cache directory: refused before any fetch or path is made.
    monkeypatch.setenv("STREAMSYNC_CACHE_DIR", str(tmp_path))
    rc, err = run(capsys, ["dev", "kafka", command, "--version", version])
    assert_one_line(rc, err, f"dev kafka {command}", "--version", "not an Apache Kafka version")
    assert list(tmp_path.iterdir()) == []


def test_the_broker_refuses_a_version_that_is_not_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamsync.dev.broker import KafkaFetchError, fetch_kafka_jars

    cache = tmp_path / "cache"
    monkeypatch.setenv("STREAMSYNC_CACHE_DIR", str(cache))
    with pytest.raises(KafkaFetchError, match="not an Apache Kafka version"):
        fetch_kafka_jars("../../escape")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_fetch_names_the_command(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamsync.dev.broker import KafkaFetchError

    def offline(*args: object, **kwargs: object) -> Path:
        raise KafkaFetchError("Maven could not reach\nrepo.maven.apache.org")

    monkeypatch.setattr("streamsync.dev.broker.fetch_kafka_jars", offline)
    rc, err = run(capsys, ["dev", "kafka", "fetch"])
    # Not a usage mistake (exit 1), but reported the same way: one line, the command.
    assert (rc, err) == (
        1,
        "streamsync dev kafka fetch: Maven could not reach repo.maven.apache.org\n",
    )
