"""Clip ids looked up by Arrow's hash tables (C++, freed with the call), not a pandas Index:
an Index of Arrow strings makes a Python string per id for its hash table, and at 100,000
clips that heap stayed resident after the look-ups (mining's flow entered its fits ~35 MB
higher at 100,000 than at 25,000 beyond the feature matrix, from one such look-up of the
bundle's ids). Not a stage: helpers the bundle's build, training and mining share."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def arrow_ids(ids: Sequence[str] | pa.Array | pa.ChunkedArray) -> pa.Array:
    """`ids` as one Arrow large_string array (no copy of an Arrow-backed array of one chunk)."""
    arr = ids
    if not isinstance(arr, pa.Array | pa.ChunkedArray):
        arr = pa.array(pd.array(ids, dtype="str", copy=False))
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.chunk(0) if arr.num_chunks == 1 else arr.combine_chunks()
    return arr if arr.type == pa.large_string() else arr.cast(pa.large_string())


class IdIndex:
    """Positions among unique clip ids (one Arrow array, kept, not copied into Python)."""

    def __init__(self, ids: Sequence[str] | pa.Array, twice: str = "clip {!r} is there twice") -> None:
        self.ids = arrow_ids(ids)
        if len(pc.unique(self.ids)) != len(self.ids):
            counts = pc.value_counts(self.ids)
            dup = counts.field("values").filter(pc.greater(counts.field("counts"), 1))[0].as_py()
            raise ValueError(twice.format(dup))

    def __len__(self) -> int:
        return len(self.ids)

    def positions(self, ids: Sequence[str] | pa.Array) -> np.ndarray:
        """Each of `ids`' position here (int64), -1 where it is not here."""
        return positions(ids, self.ids)


def positions(ids: Sequence[str] | pa.Array, within: Sequence[str] | pa.Array) -> np.ndarray:
    """Each of `ids`' position in `within` (int64; -1 where absent), `within` being known to
    hold each id once (`IdIndex` checks that)."""
    at = pc.index_in(arrow_ids(ids), value_set=arrow_ids(within))
    return at.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def isin(ids: Sequence[str] | pa.Array, among: Sequence[str] | pa.Array) -> np.ndarray:
    """Whether each of `ids` is among `among` (which may hold an id twice), by Arrow's hash."""
    return pc.is_in(arrow_ids(ids), value_set=arrow_ids(among)).to_numpy(zero_copy_only=False).astype(bool)
