"""Where the project's data files are: ``schemas/`` and ``examples/``.

They live at the top of the repository (the design keeps schemas next to the code that
reads them, not inside the package), so a checkout finds them beside the package, and an
installed copy (the Docker image) finds them in ``STREAMSYNC_HOME`` or the working
directory, which the image sets to the copied repository.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "STREAMSYNC_HOME"


def project_roots() -> list[Path]:
    """Candidate project roots, in the order they are tried."""
    roots = []
    if home := os.environ.get(HOME_ENV, "").strip():
        roots.append(Path(home))
    roots.append(Path(__file__).resolve().parents[1])
    roots.append(Path.cwd())
    return roots


def project_path(*parts: str) -> Path:
    """The first existing ``<root>/<parts>``; the checkout's path if none exists (so an
    error message names where it was expected)."""
    roots = project_roots()
    for root in roots:
        candidate = root.joinpath(*parts)
        if candidate.exists():
            return candidate
    return roots[-2].joinpath(*parts)
