"""Every shell command in docs/operations.md (and the README's Operations section) runs.

Commands are taken from the ```sh blocks as written. Commands that change a cluster
(``scripts/helm.sh upgrade --install RELEASE CHART ARGS``) cannot run without one; they are
checked by rendering the chart with exactly the same arguments (``template RELEASE CHART
ARGS``), which is what helm would apply, and the render is checked for the effect the
guide promises. A command of any other kind fails the test until a test runs it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.chart import FULL_VALUES, RELEASE, ROOT, helm

pytestmark = pytest.mark.helm

GUIDE = ROOT / "docs" / "operations.md"
_UPGRADE = "scripts/helm.sh upgrade --install "


def shell_blocks(markdown: str) -> list[list[str]]:
    """The commands of each ```sh block (run in order: later ones may read what earlier
    ones wrote), continuation lines joined, comments dropped."""
    blocks = []
    for block in re.findall(r"^```sh\n(.*?)^```", markdown, flags=re.M | re.S):
        commands = []
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                commands.append(re.sub(r"\s+", " ", line))
        blocks.append(commands)
    return blocks


def shell_commands(markdown: str) -> list[str]:
    return [command for block in shell_blocks(markdown) for command in block]


def readme_operations() -> str:
    text = (ROOT / "README.md").read_text("utf-8")
    start = text.index("## Operations\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory laid out like a checkout, with the guide's values.yaml (the full
    example), so commands run as written without touching the repository."""
    helm()  # build (once) before the commands time out on it
    work = tmp_path_factory.mktemp("ops-guide")
    for name in ("helm", "scripts", "examples", "schemas"):
        (work / name).symlink_to(ROOT / name)
    venv = ROOT / ".venv"
    if venv.is_dir():
        (work / ".venv").symlink_to(venv)
    else:  # the interpreter running the tests has streamsync installed
        (work / ".venv").mkdir()
        (work / ".venv" / "bin").symlink_to(Path(sys.executable).parent)
    shutil.copy(FULL_VALUES, work / "values.yaml")
    return work


def run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def check_render(command: str, manifests: str) -> None:
    """The effect the guide promises for this command."""
    docs: list[dict[str, Any]] = [d for d in yaml.safe_load_all(manifests) if d]

    def deployment(name: str) -> dict[str, Any]:
        (found,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name]
        return found

    braze = deployment(f"{RELEASE}-deliver-braze")
    if "destinations.braze.paused=true" in command:
        assert braze["spec"]["replicas"] == 0
        assert deployment(f"{RELEASE}-deliver-moengage")["spec"]["replicas"] == 1
    else:
        assert braze["spec"]["replicas"] >= 1
    match = re.search(r"--set-file '?audiences\.([\w-]+)\\\.yaml=([^' ]+)", command)
    if match:
        (audiences,) = [
            d
            for d in docs
            if d["kind"] == "ConfigMap" and d["metadata"]["name"] == f"{RELEASE}-audiences"
        ]
        key = f"{match.group(1)}.yaml"
        assert audiences["data"][key].strip() == (ROOT / match.group(2)).read_text().strip()


def test_the_guide_has_commands_for_every_task() -> None:
    commands = shell_commands(GUIDE.read_text("utf-8"))
    assert any("paused=true" in c for c in commands) and any("paused=false" in c for c in commands)
    assert any(c.startswith(".venv/bin/streamsync validate ") for c in commands)
    assert any(c.startswith(".venv/bin/streamsync replay ") for c in commands)
    assert any("--set-file" in c for c in commands)


def run_command(source: str, command: str, cwd: Path) -> None:
    if command.startswith(_UPGRADE):
        rendered = "scripts/helm.sh template " + command[len(_UPGRADE) :]
        done = run(rendered, cwd)
        assert done.returncode == 0, done.stderr
        check_render(command, done.stdout)
        return
    if not command.startswith(("scripts/helm.sh ", ".venv/bin/streamsync ")):
        pytest.fail(f"no test runs this command from {source}: {command}")
    done = run(command, cwd)
    assert done.returncode == 0, f"{command}\n{done.stderr}"
    assert "Traceback" not in done.stderr


_BLOCKS = [("guide", b) for b in shell_blocks(GUIDE.read_text("utf-8"))] + [
    ("readme", b) for b in shell_blocks(readme_operations())
]


@pytest.mark.parametrize(
    "source,block", _BLOCKS, ids=[f"{s}-{i}-{b[0].split()[1]}" for i, (s, b) in enumerate(_BLOCKS)]
)
def test_commands_run(source: str, block: list[str], workdir: Path) -> None:
    cwd = workdir if source == "guide" else ROOT
    for command in block:
        run_command(source, command, cwd)
