"""A write the filesystem refuses (a full disk) stops the service with one line in the
operator's group (exit status 1), never a traceback.

Two kinds of proof. Injected, where the project meets the failure: the text RocksDB
raises for ``ENOSPC`` (``IO error: No space left on device: ...``) from the store's
write, and Python's ``OSError(ENOSPC)`` from a file write, so that every place the store
meets it (a commit's write batch, a restore, the instance id) is covered. And real: a
``streamsync evaluate`` process whose ``state_dir`` is a small tmpfs of its own (a mount
namespace made with ``unshare``, so no root is needed where user namespaces are allowed),
filled from outside while the service runs, so that RocksDB itself meets the full disk
at whichever call it meets it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
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


def _namespaces_allowed() -> bool:
    """Whether this machine lets a process mount a tmpfs in a mount namespace of its own
    (``unshare`` present, user and mount namespaces allowed)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt || exit 1"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def _fill(directory: Path) -> int:
    """Write zeros into ``directory`` until its filesystem refuses: the bytes written."""
    written = 0
    with contextlib.suppress(OSError), (directory / "filler").open("wb") as out:
        while True:
            out.write(bytes(1 << 16))
            out.flush()
            written += 1 << 16
    return written


@pytest.mark.kafka
def test_evaluate_stops_with_one_line_on_a_real_full_filesystem(
    kafka_bootstrap_servers: str, tmp_path: Path
) -> None:
    """``state_dir`` is a 16 MiB tmpfs seen only by the evaluate process; once it has
    committed, the test fills that filesystem through ``/proc/<pid>/root`` (the
    process's own view of the mounts) and produces more records: the next commit's
    RocksDB write meets the real ``ENOSPC``."""
    if not _namespaces_allowed():
        pytest.skip("this machine does not allow a tmpfs in a mount namespace (unshare -rm)")
    stream = Stream(kafka_bootstrap_servers, partitions=1)
    stream.produce(synthetic(20, 200, seed=7))
    config = stream.config(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    log = tmp_path / "evaluate.log"
    mount = f'mount -t tmpfs -o size=16m tmpfs {state} && exec "$@"'
    command = ["unshare", "-rm", "sh", "-c", mount, "sh", sys.executable, "-m", "streamsync"]
    command += ["evaluate", "--config", str(config)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=out)
    try:
        wait_until_committed(stream, 60)  # runs normally first, on its own tmpfs
        seen = Path(f"/proc/{process.pid}/root") / state.relative_to("/")
        assert (seen / "lock").exists(), log.read_text()  # the process's tmpfs, not ours
        assert not (state / "lock").exists()
        assert _fill(seen) > 0
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
    assert last.startswith(f"streamsync evaluate: local state {state}"), text
    assert "No space left on device" in last, text
