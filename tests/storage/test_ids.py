"""Clip-id look-ups by Arrow's hash tables (storage/ids.py)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from storage.ids import IdIndex, isin


def test_positions_membership_and_a_duplicate_named():
    index = IdIndex(pd.array(["b", "a", "c"], dtype="str"))
    assert index.positions(["a", "z", "c"]).tolist() == [1, -1, 2]
    assert index.positions(pa.chunked_array([["c"], ["b"]])).tolist() == [2, 0]      # chunked Arrow
    assert index.positions([]).tolist() == [] and index.positions([]).dtype == np.int64
    assert isin(pd.Series(["c", "q"]), index.ids).tolist() == [True, False]
    assert isin(["a", "x"], ["a", "a"]).tolist() == [True, False]                      # `among` may repeat
    with pytest.raises(ValueError, match="clip 'a' is in the pool twice"):
        IdIndex(["a", "b", "a"], "clip {!r} is in the pool twice")


def test_a_look_up_makes_no_python_string_per_id():
    """A pandas Index of Arrow strings made a Python string per id for its hash table (~6 MB
    at 100,000 ids, left resident in the heap); Arrow's hash table is C++ and freed."""
    ids = pd.array([f"clip-{i:08d}" for i in range(100_000)], dtype="str")
    wanted = ids[::3]
    tracemalloc.start()
    try:
        at = IdIndex(ids).positions(wanted)
        ours = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        pandas_at = pd.Index(ids).get_indexer(wanted)
        theirs = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (at == pandas_at).all() and (at == np.arange(0, 100_000, 3)).all()
    assert ours < 2**20 < 4 * 2**20 < theirs, (ours, theirs)
