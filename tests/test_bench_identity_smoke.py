"""bench/identity.py runs (tiny sizes); the tests never time anything."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "identity.py"


def test_bench_identity_runs(capsys: pytest.CaptureFixture[str]) -> None:
    module = runpy.run_path(str(BENCH), run_name="bench_identity")
    assert module["main"](["--events", "3000", "--customers", "200", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "bench/identity.py --events 3000" in out
    assert "keyed by person" in out and "identity resolved" in out
    assert "ids linked" in out
