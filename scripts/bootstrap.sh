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
    # The build backend's chatter goes to a log; it is shown only when the install fails.
    log=.venv/pip-install.log
    if ! { .venv/bin/python -m pip install --quiet --upgrade pip \
        && .venv/bin/python -m pip install --quiet -e '.[dev]'; } >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "streamsync: installing into .venv failed (full log: $log)" >&2
        exit 1
    fi
    touch "$stamp"
fi
