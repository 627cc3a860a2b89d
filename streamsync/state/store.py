"""The local copy of one partition's state: an embedded RocksDB (through ``rocksdict``).

It holds the same keys as the partition's changelog, plus the changelog offset it is
up to date with, so that a restart reads only the changelog tail, plus two indexes
derived from them: customers by deadline and record ids (see
:mod:`streamsync.state.codec`). It is written only
after the Kafka transaction holding the same changes has committed (never ahead of the
changelog), in one atomic write batch per commit.

Customers are read from it on demand: a task keeps only its recently used customers in
memory, so the store, not the heap, is what bounds the customers an instance can hold.
If the configured directory cannot be opened (another process holds it, or it is
damaged) the partition is restored from the changelog alone into a throwaway copy in a
temporary directory: the local copy is an accelerator, never the source of truth.
A write the filesystem refuses (a full disk) raises
:class:`~streamsync.state.disk.StateWriteFailed`, one line in the operator's group.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from rocksdict import BlockBasedOptions, Options, Rdict, WriteBatch

from streamsync.audiences.compiler import NEVER
from streamsync.errors import NeedsRestart
from streamsync.state.codec import (
    CUSTOMER_PREFIX,
    IDS_PREFIX,
    RECORD_ID_PREFIX,
    TIMER_PREFIX,
    customer_due,
    decode_ids,
    parse_timer_key,
    timer_bound,
    timer_key,
)
from streamsync.state.disk import write_failure

log = logging.getLogger(__name__)

_OFFSET_KEY = b"\xff.changelog-offset"
_IDENTITY_KEY = b"\xff.partition"

Changes = Mapping[bytes, bytes | None]


#: RocksDB's write buffer per partition store (Kafka Streams' default size): a process
#: holds one store per assigned partition, so RocksDB's own 64 MiB would cost up to
#: 128 MiB of memtables per partition.
WRITE_BUFFER_BYTES = 16 << 20


def _options() -> Options:
    """Raw keys, and Bloom filters on the tables and on the memtable: most lookups (a
    record id never seen, a customer not stored yet) are for keys that do not exist,
    and the filters answer those in memory (about 0.3 us instead of 1.5 us here)."""
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)
    options = Options(raw_mode=True)
    options.set_block_based_table_factory(table)
    options.set_write_buffer_size(WRITE_BUFFER_BYTES)
    options.set_memtable_prefix_bloom_ratio(0.1)
    options.set_memtable_whole_key_filtering(True)
    return options


class StoreDamaged(NeedsRestart):
    """A read found the local copy damaged: exit status 3; the next start discards the
    copy and restores the partition from its changelog (the source of truth)."""


def _corrupt_marker(path: Path) -> Path:
    return path.with_name(path.name + ".damaged")


class PartitionStore:
    """Key/value state of one partition; ``path=None`` keeps a throwaway copy."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._scratch: Path | None = None
        db: Rdict | None = None
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                marker = _corrupt_marker(path)
                if marker.exists():  # a read found it damaged before the last exit
                    log.warning("local state %s was found damaged; discarded", path)
                    shutil.rmtree(path, ignore_errors=True)
                    marker.unlink()
                db = Rdict(str(path), _options())
            except Exception as exc:  # rocksdict raises plain Exception (lock, corruption)
                log.warning("local state %s unavailable (%s); using the changelog only", path, exc)
        if db is None:
            try:
                self._scratch = Path(tempfile.mkdtemp(prefix="streamsync-state-"))
                db = Rdict(str(self._scratch), _options())
            except Exception as exc:  # rocksdict raises plain Exception
                raise self._write_failed(exc) from None
        self._db: Rdict | None = db

    @property
    def _open(self) -> Rdict:
        if self._db is None:
            raise RuntimeError("the partition store is closed")
        return self._db

    @property
    def changelog_offset(self) -> int | None:
        """The changelog offset this copy includes, or ``None`` if it is empty."""
        raw = self._open.get(_OFFSET_KEY)
        return None if raw is None else int(raw)

    @property
    def identity(self) -> str | None:
        """The changelog partition this copy was restored from (``topic[partition]``),
        or ``None`` for a copy that never recorded it."""
        raw = self._open.get(_IDENTITY_KEY)
        return None if raw is None else bytes(raw).decode()

    def claim(self, identity: str) -> None:
        """Record that this copy holds the state of changelog partition ``identity``:
        a directory moved to another partition's place is then recognised."""
        try:
            self._open.put(_IDENTITY_KEY, identity.encode())
        except Exception as exc:  # rocksdict raises plain Exception
            raise self._write_failed(exc) from None

    def apply(
        self,
        changes: Changes,
        changelog_offset: int | None,
        *,
        drop_timers: Iterable[bytes] = (),
    ) -> None:
        """Apply one commit's changes (``None`` deletes) atomically, with the derived
        indexes: a timer entry for every customer written with a deadline (without the
        entries in ``drop_timers``, ones a reader found passed or stale), and the record
        ids of every id segment written, removed with their segment. An id is in one
        live segment at most: while it is indexed, a record with it is a duplicate."""
        db = self._open
        batch = WriteBatch(raw_mode=True)
        for key in drop_timers:
            batch.delete(key)
        for key, value in changes.items():
            if value is None:
                if key.startswith(IDS_PREFIX):
                    old = db.get(key)
                    for rid in decode_ids(old) if old is not None else ():
                        batch.delete(RECORD_ID_PREFIX + rid.encode())
                batch.delete(key)
                continue
            batch.put(key, value)
            if key.startswith(CUSTOMER_PREFIX):
                due = customer_due(value)
                if due < NEVER:
                    batch.put(timer_key(due, key), b"")
            elif key.startswith(IDS_PREFIX):
                for rid in decode_ids(value):
                    batch.put(RECORD_ID_PREFIX + rid.encode(), b"")
        if changelog_offset is not None:
            batch.put(_OFFSET_KEY, str(changelog_offset).encode())
        try:
            db.write(batch)
        except Exception as exc:  # rocksdict raises plain Exception
            raise self._write_failed(exc) from None

    def clear(self) -> None:
        """Forget everything (the local copy is stale or belongs to other definitions)."""
        path = self._scratch or self.path
        assert path is not None
        self._open.close()
        self._db = None
        try:
            Rdict.destroy(str(path))
            shutil.rmtree(path, ignore_errors=True)
            self._db = Rdict(str(path), _options())
        except Exception as exc:  # rocksdict raises plain Exception
            raise self._write_failed(exc) from None

    def has_record_id(self, record_id: str) -> bool:
        """Whether a live id segment holds ``record_id``."""
        db = self._db
        assert db is not None
        try:
            return db.get(RECORD_ID_PREFIX + record_id.encode()) is not None
        except Exception as exc:  # rocksdict raises plain Exception
            raise self._damaged(exc) from None

    def get(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self._open.get(key)
        except Exception as exc:  # rocksdict raises plain Exception
            raise self._damaged(exc) from None
        return value

    def _write_failed(self, exc: Exception) -> Exception:
        """What a failed write raises: :class:`~streamsync.state.disk.StateWriteFailed`
        when the filesystem refused it (a full disk), else ``exc`` itself."""
        where = self._scratch or self.path or Path(tempfile.gettempdir())
        return write_failure(where, exc) or exc

    def _damaged(self, exc: Exception) -> Exception:
        """What a failed read raises: for a damaged file (a flipped bit, a truncated
        table), :class:`StoreDamaged`, after marking the copy so that the next open
        discards it and restores from the changelog instead of failing the same way."""
        if "Corruption" not in str(exc) or self.path is None or self._scratch is not None:
            return exc
        _corrupt_marker(self.path).touch()
        return StoreDamaged(
            f"local state {self.path} is damaged ({str(exc)[:200]}); it is discarded on "
            "the next start, which restores it from the changelog"
        )

    def items(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key, value)`` whose key starts with ``prefix`` (from ``start`` on,
        if given), in key order."""
        it = self._open.iter()
        it.seek(start or prefix)
        while it.valid():
            key = it.key()
            if not key.startswith(prefix):
                return
            yield key, it.value()
            it.next()
        try:  # an iterator stops early, and silently, at a damaged block
            it.status()
        except Exception as exc:  # rocksdict raises plain Exception
            raise self._damaged(exc) from None

    def timers(self, start: int, limit: int) -> Iterator[tuple[int, bytes, bytes]]:
        """Timer index entries due in ``[start, limit)``, in time order, as ``(due,
        customer key, index key)``; stale entries included."""
        end = timer_bound(limit)
        for key, _ in self.items(TIMER_PREFIX, timer_bound(start)):
            if key >= end:
                break
            due, customer = parse_timer_key(key)
            yield due, customer, key

    def close(self) -> None:
        """Close the store; a flush the filesystem refuses on the way (a full disk,
        while the service stops for it) is logged, not raised over the error that
        stopped it: what was not flushed is in the changelog."""
        if self._db is not None:
            db, self._db = self._db, None
            try:
                db.close()
            except Exception as exc:  # rocksdict raises plain Exception
                if write_failure(self.path or Path("."), exc) is None:
                    raise
                log.warning("closing local state %s: %s", self._scratch or self.path, exc)
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
