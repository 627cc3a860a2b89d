"""A damaged local copy (a flipped bit in a table file) is never read as if it were
whole: the read fails once, the copy is marked, and the next open discards it so the
partition is restored from its changelog."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streamsync.state.store import PartitionStore, StoreDamaged


def _damaged_store(path: Path) -> None:
    store = PartitionStore(path)
    store.apply({f"c:{i:06d}".encode(): os.urandom(200) for i in range(50_000)}, 7)
    store._open.flush()  # into a table file
    store.close()
    (table,) = sorted(path.glob("*.sst"))
    data = bytearray(table.read_bytes())
    data[len(data) // 2] ^= 0xFF
    table.write_bytes(bytes(data))


def test_a_scan_over_a_damaged_block_fails_instead_of_stopping_short(tmp_path: Path) -> None:
    path = tmp_path / "p0"
    _damaged_store(path)
    store = PartitionStore(path)
    with pytest.raises(StoreDamaged, match="damaged"):
        sum(1 for _ in store.items(b"c:"))
    store.close()
    again = PartitionStore(path)  # the next start: discarded, to be restored
    assert again.changelog_offset is None
    assert again.get(b"c:000001") is None
    again.close()


def test_a_read_of_a_damaged_block_fails_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "p0"
    _damaged_store(path)
    store = PartitionStore(path)
    with pytest.raises(StoreDamaged):
        for i in range(50_000):
            store.get(f"c:{i:06d}".encode())
    store.close()
    assert PartitionStore(path).changelog_offset is None
