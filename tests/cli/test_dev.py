"""``streamsync dev``: help, ``generate`` output, and a broker that starts and stops cleanly."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from streamsync.cli import main
from streamsync.cli.arguments import rfc3339_ms
from streamsync.cli.dev import DEFAULT_START
from streamsync.dev.synthetic import DEFAULT_START_MS, format_timestamp, generate_records

_REPO = Path(__file__).resolve().parents[2]


def test_dev_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["dev", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "kafka" in out and "generate" in out


def test_generate_default_start_is_the_generators() -> None:
    """The parser writes the default out (so it loads without the generator); it must
    stay the generator's own."""
    assert rfc3339_ms(DEFAULT_START) == DEFAULT_START_MS
    assert format_timestamp(DEFAULT_START_MS) == DEFAULT_START


def test_parser_loads_no_development_tool() -> None:
    """Every command module is loaded to build the parser; the dev and demo commands
    import the broker, the generator and the demo only when they run."""
    code = (
        "import sys; from streamsync.cli import build_parser; build_parser();"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('streamsync.dev'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert loaded == ""


def test_generate_to_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "events.jsonl"
    argv = ["dev", "generate", "--customers", "30", "--events", "1000", "--seed", "9"]
    assert main([*argv, "--out", str(target)]) == 0
    lines = target.read_bytes().splitlines()
    assert len(lines) == 1000
    expected = [orjson.dumps(r) for r in generate_records(30, 1000, seed=9)]
    assert lines == expected
    assert "wrote 1,000 lines" in capsys.readouterr().err


def test_generate_with_start_and_bad_records(tmp_path: Path) -> None:
    target = tmp_path / "events.jsonl"
    argv = ["dev", "generate", "--customers", "10", "--events", "500", "--out", str(target)]
    assert main([*argv, "--start", "2025-06-01T00:00:00Z", "--bad-fraction", "0.1"]) == 0
    lines = target.read_bytes().splitlines()
    assert len(lines) > 500
    parsed = []
    for line in lines:
        try:
            parsed.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue
    stamps = [r["timestamp"] for r in parsed if isinstance(r.get("timestamp"), str)]
    assert min(stamps).startswith("2025-06")


def test_generate_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    for extra in (["--start", "2026-01-01T00:00:00"], ["--bad-fraction", "2"]):
        with pytest.raises(SystemExit):
            main(["dev", "generate", "--customers", "1", "--events", "1", *extra])
    assert "timezone" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.kafka
def test_kafka_start_serves_and_stops_on_sigterm() -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamsync", "dev", "kafka", "start", "--port", str(port)],
        cwd=_REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        try:
            ready = lines.get(timeout=150)
        except queue.Empty:
            pytest.fail("dev kafka start printed nothing within 150 s")
        assert ready.strip() == f"KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{port}"
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
        assert admin.list_topics(timeout=10).brokers
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    assert "stopping the Kafka broker" in proc.stderr.read()


def test_kafka_start_on_a_taken_port_says_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Something already listens there: the new broker could not bind, and the readiness
    # probe would hear the other one. Refused before any jar is fetched.
    def no_fetch(*args: object, **kwargs: object) -> Path:
        raise AssertionError("the port is checked first")

    monkeypatch.setattr("streamsync.dev.broker.fetch_kafka_jars", no_fetch)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc = main(["dev", "kafka", "start", "--port", str(port)])
    err = capsys.readouterr().err
    assert rc == 1
    assert err == (
        f"streamsync dev kafka start: port {port} on 127.0.0.1 is already in use; pick another\n"
    )
