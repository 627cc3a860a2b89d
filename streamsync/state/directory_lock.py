"""One process per state directory: an exclusive lock taken before any client is made.

The state directory holds the instance id, the suffix of the transactional id. A second
process started on the same directory would share that id and fence the first one's
producer (which then stopped with a traceback), and both would write the same RocksDB
stores. Instead the second stops at once, in one line naming the directory and the
process holding it, and the first carries on.

The lock is ``flock`` on a ``lock`` file in the directory, held for the life of the
process: the kernel releases it when the process ends however it ends (a SIGKILL, a
crash), so a stale lock file never keeps a restarted instance out. The file holds the
holder's pid, only to name it in the refusal.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from streamsync.errors import NeedsOperator
from streamsync.state.disk import write_failure

#: The lock file's name inside the state directory.
LOCK_NAME = "lock"


class StateDirInUse(NeedsOperator):
    """Another process holds the state directory: exit status 1; a person stops the
    other process or gives this one a state directory of its own."""


class StateDirLock:
    """The exclusive lock of one state directory (see the module docstring); taken by
    :meth:`acquire`, released by :meth:`release` or at process exit."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.state_dir / LOCK_NAME

    def acquire(self) -> StateDirLock:
        """Take the lock, or raise :class:`StateDirInUse` naming the holder's pid."""
        if self._fd is not None:
            return self
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise StateDirInUse(
                f"evaluate.state_dir {self.state_dir} is in use by another process "
                f"({holder}); stop it, or give each process a state_dir of its own"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:  # a full disk: said in one line
            os.close(fd)
            raise (write_failure(self.state_dir, exc) or exc) from None
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock up (closing the file releases it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StateDirLock:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _holder(fd: int) -> str:
    """``pid N`` from the lock file, or a vaguer phrase while the holder has not
    written it yet (it writes right after taking the lock)."""
    raw = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return f"pid {raw}" if raw.isdigit() else "pid unknown"
