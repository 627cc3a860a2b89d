"""bench/console.py runs (tiny sizes) on the real broker; the tests never time anything."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from streamsync.kafka.config import BOOTSTRAP_ENV

BENCH = Path(__file__).resolve().parents[1] / "bench" / "console.py"


@pytest.mark.kafka
def test_bench_console_runs(
    kafka_bootstrap_servers: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(BOOTSTRAP_ENV, kafka_bootstrap_servers)
    module = runpy.run_path(str(BENCH), run_name="bench_console")
    argv = ["--audiences", "5", "--deltas", "500", "--repeat", "2", "--build-deltas", "1000"]
    assert module["main"](argv) == 0
    out = capsys.readouterr().out
    assert "bench/console.py --audiences 5 --deltas 500" in out
    for row in ("| Audiences", "| One audience", "| Customer", "bare TopicReader read (floor)",
                "console store build"):  # fmt: skip
        assert row in out
