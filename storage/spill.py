"""Arrays kept on disk instead of in memory, read and written a range at a time.

A `SpillFile` is an unnamed temporary file in TMPDIR (`tempfile.TemporaryFile`: on Linux it
never has a name, and the OS frees it when it is closed or its process ends, however it ends),
in which a caller reserves regions and reads or writes any part of them as numpy arrays. The
flow keeps there what would otherwise grow with the pool in its memory: the running sums of
each head's fold-averaged pool probabilities (tasks/train.PoolPredictions), worked on a chunk
of rows at a time.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np


class SpillFile:
    """Regions of an unnamed temporary file, read and written as arrays (`pread`/`pwrite` at
    explicit offsets: forked processes that inherit the descriptor do not move a shared file
    position). A region reads as zeros until written."""

    def __init__(self) -> None:
        # Open for the object's life, not a block: closed by `close`, or with the object.
        self._file = tempfile.TemporaryFile(prefix="mersemi-spill-")  # noqa: SIM115
        self.size = 0

    def __repr__(self) -> str:
        return f"SpillFile(size={self.size})"

    def reserve(self, nbytes: int) -> int:
        """A new region of `nbytes` (zeros; sparse until written); its offset."""
        if nbytes < 0:
            raise ValueError(f"a region of {nbytes} bytes")
        offset = self.size
        self.size += int(nbytes)
        os.ftruncate(self._file.fileno(), self.size)
        return offset

    def read(self, offset: int, dtype, shape: tuple[int, ...]) -> np.ndarray:
        """A new (writable) array of `shape` read from `offset`."""
        out = np.empty(shape, dtype)
        view = memoryview(out).cast("B")
        if offset < 0 or offset + len(view) > self.size:
            raise ValueError(f"read of {len(view)} bytes at {offset} is outside the spill file's "
                             f"{self.size} bytes")
        done = 0
        while done < len(view):
            got = os.preadv(self._file.fileno(), [view[done:]], offset + done)
            if got <= 0:
                raise OSError(f"spill file: short read at {offset + done}")
            done += got
        return out

    def write(self, offset: int, values: np.ndarray) -> None:
        """Write `values` (as C-ordered bytes) at `offset`, inside a reserved region."""
        view = memoryview(np.ascontiguousarray(values)).cast("B")
        if offset < 0 or offset + len(view) > self.size:
            raise ValueError(f"write of {len(view)} bytes at {offset} is outside the spill file's "
                             f"{self.size} bytes")
        done = 0
        while done < len(view):
            done += os.pwrite(self._file.fileno(), view[done:], offset + done)

    def close(self) -> None:
        self._file.close()

    @property
    def closed(self) -> bool:
        return self._file.closed
