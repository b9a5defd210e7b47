"""Prefect wiring: the flows, their parameters and runners, and the `mersemi` CLI.

The CLI and the deployments' entry points import this package before anything loads pyarrow,
so the process's allocator settings below are in place when Arrow's memory pool starts.
"""

import os

# Arrow's memory pool is mimalloc, whose arenas are committed eagerly by default on Linux
# (MIMALLOC_ARENA_EAGER_COMMIT=2). Measured here (docs/benchmarks.md, session 15): with eager
# commit, building the 100,000-candidate bundle left ~45 MB resident beyond its arrays, ~25 at
# 25,000 (memory Arrow had freed: its pool had handed out only the arrays' bytes); committed
# lazily, ~20 at either size, and the process starts ~20 MB smaller. mimalloc reads the setting
# once, when the library loads; a user's own setting is kept.
os.environ.setdefault("MIMALLOC_ARENA_EAGER_COMMIT", "0")
