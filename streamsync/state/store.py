"""The local copy of one partition's state: an embedded RocksDB (through ``rocksdict``).

It holds the same keys as the partition's changelog, plus the changelog offset it is
up to date with, so that a restart reads only the changelog tail. It is written only
after the Kafka transaction holding the same changes has committed (never ahead of the
changelog), in one atomic write batch per commit. If it cannot be opened (another
process holds it, or it is damaged) the partition is restored from the changelog alone
into memory: the local copy is an accelerator, never the source of truth.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch

log = logging.getLogger(__name__)

_OFFSET_KEY = b"\xff.changelog-offset"

Changes = Mapping[bytes, bytes | None]


class PartitionStore:
    """Key/value state of one partition; ``path=None`` keeps it in memory only."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._db: Rdict | None = None
        self._mem: dict[bytes, bytes] = {}
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._db = Rdict(str(path), Options(raw_mode=True))
            except Exception as exc:  # rocksdict raises plain Exception (lock, corruption)
                log.warning("local state %s unavailable (%s); using the changelog only", path, exc)
                self._db = None

    @property
    def changelog_offset(self) -> int | None:
        """The changelog offset this copy includes, or ``None`` if it is empty."""
        raw = self._db.get(_OFFSET_KEY) if self._db is not None else self._mem.get(_OFFSET_KEY)
        return None if raw is None else int(raw)

    def apply(self, changes: Changes, changelog_offset: int | None) -> None:
        """Apply one commit's changes (``None`` deletes) atomically."""
        if self._db is None:
            mem = self._mem
            for key, value in changes.items():
                if value is None:
                    mem.pop(key, None)
                else:
                    mem[key] = value
            if changelog_offset is not None:
                mem[_OFFSET_KEY] = str(changelog_offset).encode()
            return
        batch = WriteBatch(raw_mode=True)
        for key, value in changes.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        if changelog_offset is not None:
            batch.put(_OFFSET_KEY, str(changelog_offset).encode())
        self._db.write(batch)

    def clear(self) -> None:
        """Forget everything (the local copy is stale or belongs to other definitions)."""
        if self._db is None:
            self._mem.clear()
            return
        assert self.path is not None
        self._db.close()
        Rdict.destroy(str(self.path))
        shutil.rmtree(self.path, ignore_errors=True)
        self._db = Rdict(str(self.path), Options(raw_mode=True))

    def get(self, key: bytes) -> bytes | None:
        if self._db is None:
            return self._mem.get(key)
        value: bytes | None = self._db.get(key)
        return value

    def items(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key, value)`` whose key starts with ``prefix``, in key order."""
        if self._db is None:
            for key in sorted(k for k in self._mem if k.startswith(prefix)):
                yield key, self._mem[key]
            return
        for k, v in self._db.items(from_key=prefix):
            if not (isinstance(k, bytes) and k.startswith(prefix)):
                break
            assert isinstance(v, bytes)
            yield k, v

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
