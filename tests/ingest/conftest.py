"""Fixtures for the ingest tests: a schema registry in a temporary directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from streamsync.ingest.avro import PIPELINES_SCHEMA_PATH, WEBHOOK_SCHEMA_PATH, FileSchemaRegistry

#: Ids used by the tests' registry; 99 holds a file that is not a valid schema.
PIPELINES_ID = 1
WEBHOOK_ID = 2
BROKEN_ID = 99


@pytest.fixture
def registry(tmp_path: Path) -> FileSchemaRegistry:
    shutil.copy(PIPELINES_SCHEMA_PATH, tmp_path / f"{PIPELINES_ID}.avsc")
    shutil.copy(WEBHOOK_SCHEMA_PATH, tmp_path / f"{WEBHOOK_ID}.avsc")
    (tmp_path / f"{BROKEN_ID}.avsc").write_text('{"type": "record", "name": "x"')
    return FileSchemaRegistry.from_path(tmp_path)
