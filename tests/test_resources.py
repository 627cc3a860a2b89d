"""Data files are found from a checkout and from STREAMSYNC_HOME (the Docker image)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamsync.resources import HOME_ENV, project_path


def test_checkout_finds_the_delta_schema() -> None:
    assert project_path("schemas", "membership_delta.avsc").is_file()
    assert project_path("examples", "audiences").is_dir()


def test_home_wins_when_it_has_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "membership_delta.avsc").write_text("{}")
    monkeypatch.setenv(HOME_ENV, str(tmp_path))
    assert project_path("schemas", "membership_delta.avsc") == (
        tmp_path / "schemas" / "membership_delta.avsc"
    )
    # Missing there: the checkout's copy is still found.
    assert project_path("examples", "audiences").is_dir()
