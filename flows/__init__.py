"""Prefect wiring: the flows, their parameters and runners, and the `mersemi` CLI.

The CLI and the deployments' entry points import this package before anything loads pyarrow,
so the process's allocator settings below are in place when Arrow's memory pool starts.
"""

import os

# Where Arrow's memory pool is mimalloc (pyarrow's default: a user's ARROW_DEFAULT_MEMORY_POOL, or
# a pyarrow without jemalloc; `_arrow_memory_pool` below), its arenas are committed eagerly on Linux
# (MIMALLOC_ARENA_EAGER_COMMIT=2). Measured here (docs/benchmarks.md, session 15): with eager
# commit, building the 100,000-candidate bundle left ~45 MB resident beyond its arrays, ~25 at
# 25,000 (memory Arrow had freed: its pool had handed out only the arrays' bytes); committed
# lazily, ~20 at either size, and the process starts ~20 MB smaller. mimalloc reads the setting
# once, when the library loads; a user's own setting is kept.
os.environ.setdefault("MIMALLOC_ARENA_EAGER_COMMIT", "0")


def _arrow_memory_pool() -> None:
    """Arrow's default memory pool: jemalloc where this pyarrow has it, unless the user chose one
    (ARROW_DEFAULT_MEMORY_POOL). Arrow's jemalloc hands freed pages back at once (decay 0);
    mimalloc kept some of what the bundle's build had read (Parquet pages, each feature set's
    Arrow frame) resident. Measured here (docs/benchmarks.md, session 19): from 100,000 to
    400,000 candidates, training's peak memory grew 68 MB beyond the feature matrix with
    jemalloc, 154-159 with mimalloc (two runs) and 103 with the system allocator; the predict
    stage's 61, 110-132 and 102."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    import pyarrow as pa

    if "jemalloc" in pa.supported_memory_backends():
        pa.set_memory_pool(pa.jemalloc_memory_pool())


_arrow_memory_pool()
