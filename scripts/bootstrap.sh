#!/usr/bin/env bash
# Create (or refresh) the project's virtualenv in .venv with streamsync and its dev tools.
# Idempotent and quick when nothing changed: it reinstalls only when pyproject.toml changes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "streamsync: creating virtualenv in .venv" >&2
    "$python" -m venv .venv
fi
stamp=.venv/.streamsync-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "streamsync: installing streamsync and its dev tools into .venv" >&2
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[dev]'
    touch "$stamp"
fi
