"""Render helm/streamsync with the project's pinned helm (scripts/helm.sh builds it once)."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "streamsync"
FULL_VALUES = CHART / "ci" / "full-values.yaml"
RELEASE = "streamsync"
# The first build of helm from source takes a few minutes on a clean machine.
_BUILD_TIMEOUT_S = 1200


class RenderError(Exception):
    """helm refused to render; the message is helm's own."""


@functools.cache
def helm() -> str:
    """The path of the pinned helm binary, building it on first use."""
    done = subprocess.run(
        [str(ROOT / "scripts" / "helm.sh"), "--print-path"],
        capture_output=True,
        text=True,
        timeout=_BUILD_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"scripts/helm.sh could not provide helm:\n{done.stderr}")
    return done.stdout.strip()


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm(), *args], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )


def render(*args: str, full: bool = False) -> list[dict[str, Any]]:
    """The chart's manifests for the default values (``full``: the full example) plus
    ``args`` (``--set ...``, ``-f ...``)."""
    files = ["-f", str(FULL_VALUES)] if full else []
    done = run_helm("template", RELEASE, str(CHART), *files, *args)
    if done.returncode != 0:
        raise RenderError(done.stderr.strip())
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        doc
        for doc in docs
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = find(docs, kind, name)
    return doc


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] in ("Deployment", "StatefulSet")]
