"""bench/backfill.py runs (a few thousand members) on the real broker and the stand-ins;
the tests never time anything."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from streamsync.kafka.config import BOOTSTRAP_ENV

BENCH = Path(__file__).resolve().parents[1] / "bench" / "backfill.py"


@pytest.mark.kafka
def test_bench_backfill_converges(
    kafka_bootstrap_servers: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(BOOTSTRAP_ENV, kafka_bootstrap_servers)
    module = runpy.run_path(str(BENCH), run_name="bench_backfill")
    assert module["main"](["--members", "3000", "--audiences", "2"]) == 0
    out = capsys.readouterr().out
    assert "bench/backfill.py --members 3000 --audiences 2" in out
    assert "3,000 members of 2 audiences (1,500 customers)" in out
    for label in ("baseline: bare aiohttp sender", "streamsync deliver"):
        (row,) = [line for line in out.splitlines() if line.startswith(label)]
        assert row.endswith("0 of 1,500")  # every profile equals the desired state
    (ceiling,) = [line for line in out.splitlines() if line.startswith("documented ceiling")]
    assert ceiling.split()[-4:-2] == ["75.0", "20"]  # 1,500 objects, 75 per request
    assert "strict stand-in violations: 0" in out
    assert "converged: yes" in out
