"""A local write the filesystem refuses (a full disk, a quota, a read-only remount).

RocksDB reports these as a plain ``Exception`` whose text starts ``IO error:``, Python as
an :class:`OSError`; either used to end the service in a traceback. They are one error
here, in the operator's group: retrying cannot free space, a person does, and then the
service starts again without losing anything, since the local state is written only
after its Kafka transaction committed and is restored from the changelog where it is
behind or missing.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from streamsync.errors import NeedsOperator

#: The ``errno`` values that mean the filesystem, not the program, refused the write.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})

#: How RocksDB's text names an I/O failure (``IO error: No space left on device: ...``).
_ROCKSDB_IO = ("IO error", "No space left on device")


class StateWriteFailed(NeedsOperator):
    """The filesystem refused a write to the local state: exit status 1; a person frees
    space (or fixes the filesystem) and starts the service again."""


def write_failure(where: Path, exc: BaseException) -> StateWriteFailed | None:
    """The :class:`StateWriteFailed` that ``exc``, raised writing ``where``, means, or
    ``None`` when it is not the filesystem refusing a write (raised on unchanged)."""
    if isinstance(exc, OSError):
        if exc.errno not in DISK_ERRNOS:
            return None
        reason = os.strerror(exc.errno or errno.EIO)
    elif isinstance(exc, Exception) and any(mark in str(exc) for mark in _ROCKSDB_IO):
        reason = " ".join(str(exc).split())[:200]
    else:
        return None
    return StateWriteFailed(
        f"local state {where} cannot be written ({reason}); free space on its filesystem "
        "and start again (committed work is in Kafka; the local state is restored from "
        "the changelog)"
    )
