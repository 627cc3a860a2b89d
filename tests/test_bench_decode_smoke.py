"""bench/decode.py runs (tiny record count); the tests never time anything."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "decode.py"


def test_bench_decode_runs(capsys: pytest.CaptureFixture[str]) -> None:
    module = runpy.run_path(str(BENCH), run_name="bench_decode")
    assert module["main"](["--records", "200"]) == 0
    out = capsys.readouterr().out
    assert "bench/decode.py --records 200" in out
    assert "baseline json.loads + pydantic" in out
    assert "peak RSS" in out
