"""``replay`` and file-mode ``explain`` read a file with a configuration's input policy
(``--config``), as the Kafka path does; replay's summary counts skipped records by
reason; ``ingest decode`` names the batch item of an error."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamsync.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "ingest" / "fixtures"

CONTACTED = """
name: ACT__Opened__7d
version: 1
owner: retention@example.com
description: Opened a message in the last week.
entry:
  since_last: {event: opened, kind: webhook, less_than: 7d}
"""

#: identifiers.id is null; email and cio_id are set.
HOOK = orjson.loads((FIXTURES / "customerio_webhook_identity.jsonl").read_bytes().splitlines()[1])


def _config(tmp_path: Path, identity: list[str] | None = None, **evaluate: Any) -> Path:
    webhooks: dict[str, Any] = {"name": "hooks", "format": "webhook_json"}
    if identity is not None:
        webhooks["identity"] = identity
    config: dict[str, Any] = {
        "ingest": {"topics": [{"name": "p", "format": "pipelines_json"}, webhooks]}
    }
    if evaluate:
        config["evaluate"] = {"audiences": str(tmp_path / "a.yaml"), **evaluate}
    path = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.yaml"
    path.write_bytes(orjson.dumps(config))
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "a.yaml").write_text(CONTACTED)
    events = tmp_path / "events.jsonl"
    events.write_bytes(orjson.dumps(HOOK) + b"\n")
    return tmp_path / "a.yaml", events


def _replay(
    capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, list[dict[str, Any]], str]:
    capsys.readouterr()
    rc = main(["replay", *args])
    captured = capsys.readouterr()
    return rc, [orjson.loads(line) for line in captured.out.splitlines()], captured.err


def test_replay_keys_webhooks_by_the_configured_identity(
    tmp_path: Path, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    audiences, events = files
    base = ("--audiences", str(audiences), "--events", str(events), "--quiet")
    _, default, _ = _replay(capsys, *base)
    assert [(d["customer_id"], d["id_kind"]) for d in default] == [("test@example.com", "email")]
    config = _config(tmp_path, identity=["id", "cio_id", "email"])
    rc, configured, _ = _replay(capsys, *base, "--config", str(config))
    assert rc == 0
    assert [(d["customer_id"], d["id_kind"]) for d in configured] == [("d9c106000001", "cio_id")]


def test_file_explain_uses_the_same_policy(
    tmp_path: Path, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    audiences, events = files
    config = _config(tmp_path, identity=["id", "cio_id"])
    base = ["explain", "--audiences", str(audiences), "--events", str(events)]
    capsys.readouterr()
    assert main([*base, "--config", str(config), "--customer", "d9c106000001"]) == 0
    out = capsys.readouterr().out
    assert "ENTER ACT__Opened__7d" in out and "because of webhook 'opened'" in out
    assert main([*base, "--customer", "d9c106000001"]) == 0
    assert "never entered any audience" in capsys.readouterr().out


def test_the_configured_clock_skew_bounds_replay(
    tmp_path: Path, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A record two hours ahead of the clock is within the default one-day skew but
    beyond a configured hour: the configuration's bound applies to the file."""
    audiences, events = files
    ahead = {**HOOK, "timestamp": int(time.time()) + 2 * 3600}
    events.write_bytes(orjson.dumps(ahead) + b"\n")
    base = ("--audiences", str(audiences), "--events", str(events))
    rc, default, _ = _replay(capsys, *base)
    assert rc == 0 and len(default) == 1
    path = _config(tmp_path)
    config = orjson.loads(path.read_bytes())
    config["ingest"]["topics"][1]["max_clock_skew_s"] = 3600
    path.write_bytes(orjson.dumps(config))
    rc, bounded, err = _replay(capsys, *base, "--config", str(path))
    assert rc == 0 and bounded == []
    assert "undecodable bad_timestamp: 1" in err


def test_the_configured_allowed_lateness_is_the_default(
    tmp_path: Path, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A record 10 minutes behind the newest is reordered under evaluate's 1h lateness
    and late (5 minutes behind the clock, applied at its own time) under the default 5m."""
    audiences, events = files
    newer = {**HOOK, "event_id": "e-2", "timestamp": HOOK["timestamp"] + 600}
    older = {**HOOK, "event_id": "e-1"}
    events.write_bytes(orjson.dumps(newer) + b"\n" + orjson.dumps(older) + b"\n")
    base = ("--audiences", str(audiences), "--events", str(events))
    _, _, err = _replay(capsys, *base)
    assert "1 late (applied at their time), 0 too late" in err
    config = _config(tmp_path, allowed_lateness="1h")
    _, _, err = _replay(capsys, *base, "--config", str(config))
    assert "0 late (applied at their time), 0 too late" in err
    _, _, err = _replay(capsys, *base, "--config", str(config), "--allowed-lateness", "5m")
    assert "1 late (applied at their time), 0 too late" in err


def test_replay_summary_lists_skipped_records_by_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.yaml").write_text(CONTACTED)
    events = tmp_path / "calls.jsonl"
    lines = (FIXTURES / "pipelines_calls.jsonl").read_bytes().splitlines()
    anonymous = {**orjson.loads(lines[0]), "userId": None, "messageId": "anon-1"}
    events.write_bytes(b"\n".join([*lines, orjson.dumps(anonymous), b'{"batch": []}']) + b"\n")
    base = ("--audiences", str(tmp_path / "a.yaml"), "--events", str(events))
    # With identity links off, the alias and the anonymous record are skipped too.
    config = orjson.loads(_config(tmp_path).read_bytes())
    config["identity"] = {"anonymous": False, "alias": False, "email": False}
    path = tmp_path / "no-identity.yaml"
    path.write_bytes(orjson.dumps(config))
    rc, _, err = _replay(capsys, *base, "--config", str(path))
    assert rc == 0
    assert "4 skipped" in err
    for reason in ("alias", "empty_batch", "group", "no_customer"):
        assert f"  skipped {reason}: 1" in err.splitlines()
    # By default the alias is a link and the anonymous record is held for one.
    rc, _, err = _replay(capsys, *base)
    assert rc == 0
    assert "2 skipped" in err
    for reason in ("empty_batch", "group"):
        assert f"  skipped {reason}: 1" in err.splitlines()
    assert "  identity: 4 ids linked, 1 records attributed through a link" in err


def test_a_missing_config_is_one_line(
    tmp_path: Path, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    audiences, events = files
    capsys.readouterr()
    argv = ["--audiences", str(audiences), "--events", str(events)]
    assert main(["replay", *argv, "--config", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("streamsync replay: ") and "nope.yaml" in err


def test_ingest_decode_names_the_batch_item_of_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = {
        "type": "track",
        "userId": "u1",
        "event": "A",
        "messageId": "m1",
        "timestamp": "2025-01-01T00:00:00Z",
    }
    bad = {k: v for k, v in good.items() if k != "event"}
    path = tmp_path / "batch.jsonl"
    path.write_bytes(orjson.dumps(good) + b"\n" + orjson.dumps({"batch": [good, bad, 3]}) + b"\n")
    capsys.readouterr()
    assert main(["ingest", "decode", "--format", "pipelines_json", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == ["1", "2", "2 item 1", "2 item 2"]
    assert out[2] == "2 item 1: ERROR missing_field: event is required"
    assert out[3] == "2 item 2: ERROR wrong_type: batch item must be an object, got integer"
