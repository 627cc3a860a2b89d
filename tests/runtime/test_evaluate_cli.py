"""``streamsync evaluate`` as a user runs it: mistakes and an unreachable cluster give
one line and a non-zero exit, never a traceback or a flood of client logs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamsync.resources import project_path

AUDIENCES = project_path("examples", "audiences")


def _run(config: Path, bootstrap: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    return subprocess.run(
        [sys.executable, "-m", "streamsync", "evaluate", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _config(tmp_path: Path, topic: str, **evaluate: str) -> Path:
    lines = [
        "ingest:",
        f"  topics: [{{name: {topic}, format: pipelines_json}}]",
        "evaluate:",
        f"  audiences: {AUDIENCES}",
        f"  state_dir: {tmp_path / 'state'}",
        *(f"  {k}: {v}" for k, v in evaluate.items()),
        "observability: {admin: {port: 0}, log_format: text}",  # a free admin port
    ]
    path = tmp_path / "config.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_unreachable_broker_is_reported_and_exits_non_zero(tmp_path: Path) -> None:
    result = _run(_config(tmp_path, "x", broker_timeout="6s"), "127.0.0.1:1")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "%3|" not in result.stderr  # librdkafka's own per-attempt log lines
    reports = [line for line in result.stderr.splitlines() if "cannot reach Kafka" in line]
    assert 1 <= len(reports) <= 3, result.stderr
    assert reports[-1].startswith("streamsync evaluate: cannot reach Kafka at 127.0.0.1:1")


def test_a_configuration_without_an_evaluate_section_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("ingest:\n  topics: [{name: x, format: pipelines_json}]\n")
    result = _run(path, "127.0.0.1:1")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no evaluate section" in result.stderr


def test_a_bare_number_as_a_duration_is_a_usage_error(tmp_path: Path) -> None:
    result = _run(_config(tmp_path, "x", commit_interval="100"), "127.0.0.1:1")
    assert result.returncode == 2
    assert "evaluate.commit_interval" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("inside", [False, True], ids=["the-file", "under-a-file"])
def test_a_state_dir_that_is_a_file_is_one_line(tmp_path: Path, inside: bool) -> None:
    taken = tmp_path / "taken"
    taken.write_text("not a directory\n")
    state = taken / "state" if inside else taken
    config = _config(tmp_path, "x")
    text = config.read_text().replace(str(tmp_path / "state"), str(state))
    config.write_text(text)
    result = _run(config, "127.0.0.1:1")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert lines == [
        f"streamsync evaluate: evaluate.state_dir {state}: not a directory"
        + (f" ({taken} is not a directory)" if inside else "")
        + "; name a directory"
    ]


@pytest.mark.kafka
def test_a_missing_input_topic_is_named(kafka_bootstrap_servers: str, tmp_path: Path) -> None:
    result = _run(_config(tmp_path, "no-such-topic-3f9a"), kafka_bootstrap_servers)
    assert result.returncode == 2
    assert "input topics not found: no-such-topic-3f9a" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.kafka
def test_an_inexact_rebuild_is_refused_with_one_line_when_asked(
    kafka_bootstrap_servers: str, tmp_path: Path
) -> None:
    """The state was built for the example audiences; the same group with a sticky
    period changed (30 days made 20: state keeps only the current periods' ends, so it
    cannot be rebuilt exactly) and ``inexact_rebuilds: refuse`` must stop, naming it."""
    from streamsync.config import load_config
    from streamsync.runtime.app import Application
    from tests.runtime.evaluate_support import Stream, synthetic

    stream = Stream(kafka_bootstrap_servers, partitions=1)
    stream.produce(synthetic(20, 300, seed=2))
    Application(load_config(stream.config(tmp_path))).run(idle_timeout_s=1.0)
    changed = tmp_path / "changed"
    changed.mkdir()
    for path in sorted(AUDIENCES.iterdir()):
        (changed / path.name).write_text(
            path.read_text().replace("sticky_for: 30d", "sticky_for: 20d")
        )
    assert "20d" in (changed / "purchases.yaml").read_text()
    config = stream.config(tmp_path, "state", audiences=str(changed), inexact_rebuilds="refuse")
    result = _run(config, kafka_bootstrap_servers)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    [line] = [x for x in result.stderr.splitlines() if x.startswith("streamsync evaluate:")]
    assert "ACT__StarterKit__CrossSell__30d" in line and "NOT exact" in line


def test_a_configuration_that_is_not_utf8_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"\xff\xfe\x00 not text")
    result = _run(path, "127.0.0.1:1")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"streamsync evaluate: {path}: line 1: not UTF-8 text (is it a binary file?)"
    )
