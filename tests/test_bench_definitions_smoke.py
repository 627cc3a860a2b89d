"""bench/definitions.py runs (a few audiences); the tests never time anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "definitions.py"


def test_bench_definitions_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--audiences", "20"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert lines[0].startswith("$ ") and "bench/definitions.py --audiences 20" in lines[0]
    assert lines[1].startswith("20 audiences")
    assert lines[2].startswith("streamsync check_audiences") and "peak RSS" in lines[2]
    assert lines[3].startswith("baseline compose + safe_load") and "CPU" in lines[3]
