"""bench/rebuild.py runs (a few hundred customers); the tests never time anything."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "rebuild.py"


def test_bench_rebuild_runs(capsys: pytest.CaptureFixture[str]) -> None:
    module = runpy.run_path(str(BENCH), run_name="bench_rebuild")
    assert module["main"](["--customers", "300", "--commit-every", "500"]) == 0
    out = capsys.readouterr().out
    assert "bench/rebuild.py --customers 300 --commit-every 500" in out
    for label in ("from state (load + migrate)", "from history (decode + fresh engine)"):
        (row,) = [line for line in out.splitlines() if line.startswith(label)]
        assert row[len(label) :].split()[0] == "300"  # every customer, both ways
    assert "input history read by the rebuild from state: none" in out
    assert "ACT__CartAbandon__90m: changed (version 1 -> 2); rebuilt from state" in out
    assert "converted customers" in out and "audiences agree" in out
