"""bench/explain.py runs (tiny record count) on the real broker; the tests never time
anything."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from streamsync.kafka.config import BOOTSTRAP_ENV

BENCH = Path(__file__).resolve().parents[1] / "bench" / "explain.py"


@pytest.mark.kafka
def test_bench_explain_runs(
    kafka_bootstrap_servers: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(BOOTSTRAP_ENV, kafka_bootstrap_servers)
    module = runpy.run_path(str(BENCH), run_name="bench_explain")
    assert module["main"](["--records", "2000"]) == 0
    out = capsys.readouterr().out
    assert "bench/explain.py --records 2000" in out
    assert "raw read (floor, no decoding)" in out
    assert "explain, id with '/' (decodes every record)" in out
