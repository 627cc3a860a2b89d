"""scripts/helm.sh: the cache location (STREAMSYNC_CACHE_DIR, like the Kafka jars) and the
message when helm can be neither found nor built."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.helm.chart import ROOT

SCRIPT = ROOT / "scripts" / "helm.sh"


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_a_cached_helm_is_run_from_the_cache_dir(tmp_path: Path) -> None:
    fake = tmp_path / "helm" / "v3.22.0" / "bin" / "helm"
    fake.parent.mkdir(parents=True)
    fake.write_text('#!/bin/sh\necho "cached helm: $*"\n')
    fake.chmod(0o755)
    env = {**os.environ, "STREAMSYNC_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    env.pop("STREAMSYNC_HELM_VERSION", None)
    done = _run(["version", "--short"], env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "cached helm: version --short\n"
    assert _run(["--print-path"], env).stdout.strip() == str(fake)


def test_no_cache_and_no_go_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "STREAMSYNC_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = _run(["version"], env)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "Go is not on the PATH" in done.stderr and str(tmp_path) in done.stderr
