"""Handing a process's freed memory back to the OS, for the stages whose steps free a lot of it
(the bundle's build, each fit's pool blocks, a round's vote). Not a stage: helpers the stages
share (tasks/train, tasks/mine, tasks/predict, flows/mine)."""

from __future__ import annotations

import contextlib
import ctypes
import gc


def release_memory() -> None:
    """Hand freed heap memory back to the OS: a collection, then `trim_heap` (the feature
    frames are millions of small allocations; freed, they stay in the process's heap, resident,
    and forked fold workers would inherit them). Not while forked workers share this process's
    pages: a collection writes to every tracked object's header, so each page of them shared
    with a worker is copied (`trim_heap` alone is safe then)."""
    gc.collect()
    trim_heap()


def trim_heap() -> None:
    """Hand the heap's free pages back to the OS: glibc's `malloc_trim` (elsewhere nothing) and
    Arrow's pool's unused pages. Pages shared with forked workers stay theirs; the rest are freed."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with contextlib.suppress(Exception):
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
