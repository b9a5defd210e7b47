"""A machine-wide exclusive lock on a file (flock), for work that one process at a time may do:
the numba cache's first compile (models/extractors/audio), making and sweeping the fold
workers' temporary folders (tasks/train)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def flocked(path: str) -> Iterator[None]:
    """Hold an exclusive flock of `path` (made if missing) for the block, waiting for it. Opened
    read-only: flock needs no write permission, and in a shared TMPDIR the file may be another
    user's (and, with fs.protected_regular, not openable with O_CREAT)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)                    # the lock goes with the descriptor
