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


@pytest.mark.kafka
def test_a_missing_input_topic_is_named(kafka_bootstrap_servers: str, tmp_path: Path) -> None:
    result = _run(_config(tmp_path, "no-such-topic-3f9a"), kafka_bootstrap_servers)
    assert result.returncode == 2
    assert "input topics not found: no-such-topic-3f9a" in result.stderr
    assert "Traceback" not in result.stderr
