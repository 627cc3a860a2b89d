"""A write the filesystem refuses (a full disk) stops the service with one line in the
operator's group (exit status 1), never a traceback.

What these tests prove, and what not: no small filesystem can be made full here without
root (no tmpfs, no loop device), so the failure is injected where the project meets it -
the text RocksDB raises for ``ENOSPC`` (``IO error: No space left on device: ...``) from
the store's write, and Python's ``OSError(ENOSPC)`` from a file write. They prove that
such a failure, wherever the store meets it (a commit's write batch, a restore, the
instance id), becomes one line and exit status 1 in a real ``streamsync evaluate``
process on a real broker; they do not prove which call RocksDB fails on a real full
disk (a flush in the background surfaces at the next write, with the same text).
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from streamsync.runtime.clients import instance_id
from streamsync.state.disk import StateWriteFailed, write_failure
from streamsync.state.store import PartitionStore
from tests.runtime.evaluate_support import Stream, synthetic, wait_until_committed

#: What RocksDB raises when a write meets a full disk (its ``Status::NoSpace`` text).
NO_SPACE = "IO error: No space left on device: While appending to file: {}/000009.log: " + (
    "No space left on device"
)


class _FullDisk:
    """An ``Rdict`` whose writes fail as on a full disk; everything else is the real one."""

    def __init__(self, db: Any, where: str) -> None:
        self._db, self._where = db, where

    def write(self, _batch: object) -> None:
        raise Exception(NO_SPACE.format(self._where))

    def put(self, _key: bytes, _value: bytes) -> None:
        raise Exception(NO_SPACE.format(self._where))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def test_a_commit_write_on_a_full_disk_is_one_line(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0")
    store._db = _FullDisk(store._db, str(tmp_path / "p0"))  # type: ignore[assignment]
    with pytest.raises(StateWriteFailed) as failed:
        store.apply({b"c:1": b"x"}, 3)
    message = str(failed.value)
    assert message.startswith(f"local state {tmp_path / 'p0'} cannot be written (IO error: No")
    assert "free space" in message and "\n" not in message
    assert failed.value.exit_status == 1
    with pytest.raises(StateWriteFailed):
        store.claim("changelog[0]")
    store.close()


def test_other_failures_are_not_taken_for_a_full_disk(tmp_path: Path) -> None:
    assert write_failure(tmp_path, Exception("Invalid argument: bad option")) is None
    assert write_failure(tmp_path, PermissionError(errno.EACCES, "denied")) is None
    assert write_failure(tmp_path, OSError(errno.EDQUOT, "quota")) is not None


def test_the_instance_id_on_a_full_disk_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(self: Path, *_: object, **__: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(StateWriteFailed, match=r"cannot be written \(No space left on device\)"):
        instance_id(tmp_path / "state")


#: ``streamsync evaluate`` whose RocksDB writes fail as on a full disk once the file
#: named by ``STREAMSYNC_TEST_DISK_FULL`` exists (so that it first runs normally).
_EVALUATE_ON_FILLING_DISK = """
import os, sys
from pathlib import Path
import streamsync.state.store as store
from streamsync.cli import main

real, flag = store.Rdict, Path(os.environ["STREAMSYNC_TEST_DISK_FULL"])
NO_SPACE = {no_space!r}

class Filling:
    destroy = staticmethod(real.destroy)

    def __init__(self, path, options):
        self._db, self._path = real(path, options), path

    def write(self, batch):
        if flag.exists():
            raise Exception(NO_SPACE.format(self._path))
        self._db.write(batch)

    def __getattr__(self, name):
        return getattr(self._db, name)

store.Rdict = Filling
sys.exit(main(["evaluate", "--config", sys.argv[1]]))
"""


@pytest.mark.kafka
def test_evaluate_stops_with_one_line_when_the_disk_fills(
    kafka_bootstrap_servers: str, tmp_path: Path
) -> None:
    stream = Stream(kafka_bootstrap_servers, partitions=1)
    stream.produce(synthetic(20, 200, seed=7))
    config = stream.config(tmp_path)
    flag = tmp_path / "disk-full"
    log = tmp_path / "evaluate.log"
    env = {**os.environ, "STREAMSYNC_TEST_DISK_FULL": str(flag)}
    script = _EVALUATE_ON_FILLING_DISK.format(no_space=NO_SPACE)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", script, str(config)], stdout=out, stderr=out, env=env
        )
    try:
        wait_until_committed(stream, 60)  # runs normally first
        flag.touch()
        deadline = time.monotonic() + 60
        while process.poll() is None:  # every commit writes the store: the next one fails
            assert time.monotonic() < deadline, log.read_text()
            stream.produce(synthetic(5, 20, seed=8))
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(1.0)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
    text = log.read_text()
    assert process.returncode == 1, text
    assert "Traceback" not in text
    last = text.splitlines()[-1]
    assert last.startswith(f"streamsync evaluate: local state {tmp_path / 'state'}"), text
    assert "cannot be written (IO error: No space left on device" in last
