"""``streamsync deliver`` and ``streamsync dev stand-ins`` from the command line: every
user mistake is one line and exit status 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamsync.cli import main
from tests.destinations.conftest import delta
from tests.destinations.helpers import produce_deltas, uncommitted_records, write_config


def _config(tmp_path: Path, destinations: dict[str, object]) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "ingest": {"topics": [{"name": "in", "format": "pipelines_json"}]},
                "destinations": destinations,
            }
        )
    )
    return path


BRAZE = {"kind": "braze", "base_url": "http://127.0.0.1:9", "credentials": {"env": "NO_SUCH_VAR_X"}}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--destination", "braze"], "cannot read"),
        (["--destination", "nope"], "no destination named 'nope' (configured: braze)"),
        (["--destination", "braze"], "environment variable NO_SUCH_VAR_X is unset"),
    ],
)
def test_deliver_mistakes_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    config = _config(tmp_path, {"braze": BRAZE})
    if message == "cannot read":
        config = tmp_path / "missing.yaml"
    rc = main(["deliver", "--config", str(config), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_deliver_invalid_destination_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, {"braze": {**BRAZE, "kind": "brace"}})
    assert main(["deliver", "--config", str(config), "--destination", "braze"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "kind must be one of braze, moengage" in err


def test_deliver_requires_its_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["deliver", "--config", "x.yaml"])
    assert info.value.code == 2 and "--destination" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["braze-key-0123456789", "k9"])
def test_the_fatal_error_line_masks_a_key_the_destination_echoed(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    key: str,
) -> None:
    # A 401 whose body echoes the request's Authorization header: the line that ends
    # deliver is printed outside logging and must be redacted all the same.
    from streamsync.destinations.deliver import DeliverLoop
    from streamsync.destinations.errors import FatalDestinationError

    def refused(self: DeliverLoop, **kwargs: object) -> None:
        raise FatalDestinationError(
            f"braze: HTTP 401 from the API: invalid key in 'Authorization: Bearer {key}'"
        )

    monkeypatch.setattr(DeliverLoop, "run", refused)
    monkeypatch.setenv("ECHO_KEY", key)
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "ingest": {"topics": [{"name": "in", "format": "pipelines_json"}]},
                "observability": {"admin": {"port": 0}},
                "destinations": {
                    "braze": {**BRAZE, "credentials": {"env": "ECHO_KEY"}},
                },
            }
        )
    )
    capsys.readouterr()
    rc = main(["deliver", "--config", str(config), "--destination", "braze"])
    err = capsys.readouterr().err
    assert rc == 1
    last = err.splitlines()[-1]
    assert last == (
        "streamsync deliver: stopped without committing further: braze: HTTP 401 from the "
        "API: invalid key in 'Authorization: Bearer **********'"
    )
    assert key not in err


def test_standins_serve_and_stop_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamsync", "dev", "stand-ins"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "STANDIN_BRAZE_API_KEY": "cli-key"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        urls = dict(proc.stdout.readline().decode().strip().split("=", 1) for _ in range(2))
        assert set(urls) == {"BRAZE_URL", "MOENGAGE_URL"}
        with urllib.request.urlopen(urls["BRAZE_URL"] + "/_standin/profiles", timeout=10) as r:
            assert r.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and b"cli-key" not in err and b"Traceback" not in err


@pytest.mark.kafka
def test_dry_run_logs_redacted_requests_and_commits_nothing(
    tmp_path: Path, kafka_bootstrap_servers: str, new_topic: Any,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    topic = new_topic("deltas")
    group = f"dry-run-{uuid.uuid4().hex[:8]}"
    deltas = [delta(f"c{i}", "ACT__A", "enter") for i in range(3)]
    produce_deltas(kafka_bootstrap_servers, topic, deltas)
    monkeypatch.setenv("DRY_KEY", "dry-secret-key")
    config = write_config(
        tmp_path / "c.yaml", kafka_bootstrap_servers, topic,
        {"braze": {"kind": "braze", "base_url": "http://127.0.0.1:9",
                   "credentials": {"env": "DRY_KEY"}, "group_id": group}},
    )  # fmt: skip
    rc = main(["deliver", "--config", str(config), "--destination", "braze", "--dry-run",
               "--idle-timeout", "2"])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0
    assert '"delivered":0' in captured.out and '"would_deliver":3' in captured.out
    assert "dry-secret-key" not in captured.err and "dry-secret-key" not in captured.out
    assert uncommitted_records(kafka_bootstrap_servers, group, topic, 1) == 3


@pytest.mark.kafka
def test_refused_credentials_stop_with_one_line_and_nothing_committed(
    tmp_path: Path, kafka_bootstrap_servers: str, new_topic: Any,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from streamsync.dev.standins import BrazeStandIn, StandInServer

    topic = new_topic("deltas")
    group = f"wrong-key-{uuid.uuid4().hex[:8]}"
    produce_deltas(kafka_bootstrap_servers, topic, [delta("c1", "ACT__A", "enter")])
    monkeypatch.setenv("WRONG_KEY", "not-the-key")
    with StandInServer({"braze": BrazeStandIn("the-key")}) as server:
        config = write_config(
            tmp_path / "c.yaml", kafka_bootstrap_servers, topic,
            {"braze": {"kind": "braze", "base_url": server.urls["braze"],
                       "credentials": {"env": "WRONG_KEY"}, "group_id": group}},
        )  # fmt: skip
        rc = main(["deliver", "--config", str(config), "--destination", "braze"])
    err = capsys.readouterr().err
    assert rc == 1
    [line] = [x for x in err.splitlines() if x.startswith("streamsync deliver:")]
    assert "HTTP 401" in line and "not-the-key" not in err and "Traceback" not in err
    assert uncommitted_records(kafka_bootstrap_servers, group, topic, 1) == 1


@pytest.mark.kafka
def test_deliver_serves_probes_and_delivery_metrics(
    tmp_path: Path, kafka_bootstrap_servers: str, new_topic: Any
) -> None:
    import socket
    import time

    from streamsync.dev.standins import BrazeStandIn, StandInServer

    topic = new_topic("deltas")
    produce_deltas(
        kafka_bootstrap_servers, topic, [delta(f"c{i}", "ACT__A", "enter") for i in range(5)]
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        admin_port = probe.getsockname()[1]
    with StandInServer({"braze": BrazeStandIn("the-key")}) as server:
        config = write_config(
            tmp_path / "c.yaml", kafka_bootstrap_servers, topic,
            {"braze": {"kind": "braze", "base_url": server.urls["braze"],
                       "credentials": {"env": "THE_KEY"},
                       "group_id": f"probes-{uuid.uuid4().hex[:8]}"}},
        )  # fmt: skip
        text = config.read_text().replace("port: 0", f"port: {admin_port}\n    host: 127.0.0.1")
        config.write_text(text)
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamsync", "deliver", "--config", str(config),
             "--destination", "braze"],
            env={**os.environ, "THE_KEY": "the-key"}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{admin_port}"
            deadline = time.monotonic() + 60
            metrics = ""
            while 'streamsync_destination_delivered_total{destination="braze"' not in metrics:
                assert time.monotonic() < deadline, metrics[-2000:]
                time.sleep(0.5)
                try:
                    with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
                        metrics = response.read().decode()
                except OSError:
                    continue
            with urllib.request.urlopen(base + "/readyz", timeout=5) as response:
                assert response.status == 200
            assert 'streamsync_destination_requests_total{destination="braze",status="201"' in (
                metrics
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and b"the-key" not in err
