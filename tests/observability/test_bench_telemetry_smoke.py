"""bench/telemetry.py runs (a few calls); the tests never time anything."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "telemetry.py"


def test_bench_telemetry_runs(capsys: pytest.CaptureFixture[str]) -> None:
    module = runpy.run_path(str(BENCH), run_name="bench_telemetry")
    assert module["main"](["--calls", "50"]) == 0
    out = capsys.readouterr().out
    assert "bench/telemetry.py --calls 50" in out
    assert "baseline otel counter" in out and "telemetry counter" in out
    assert "scrape:" in out
