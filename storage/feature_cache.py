"""The feature cache: extracted rows kept across runs, keyed by extractor key and media key.

    <workspace>/cache/features/<extractor key>/<part>.parquet

Each part holds the rows one shard produced for one extractor (written atomically by the
worker that computed them), so a crashed or killed run loses at most the shards in flight,
and a re-run extracts only clips whose (extractor key, media key) has no row yet. A run's
feature artifact is assembled from these parts for the clips it covers.

Row columns (FEATURE_COLUMNS): clip_id, media_key, extractor, extractor_key, status (ok,
missing, error), reason, dim, vector (list<float32>, null unless ok), seq_len, seq_dim,
sequence (flattened T x D list<float32>, null when the extractor keeps none), extra (JSON).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from storage.artifacts import atomic_write

SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("media_key", pa.string()), ("extractor", pa.string()),
    ("extractor_key", pa.string()), ("status", pa.string()), ("reason", pa.string()),
    ("dim", pa.int32()), ("vector", pa.list_(pa.float32())), ("seq_len", pa.int32()),
    ("seq_dim", pa.int32()), ("sequence", pa.list_(pa.float32())), ("extra", pa.string()),
])
FEATURE_COLUMNS = SCHEMA.names
# A run's feature artifact is sorted by clip_id and written in row groups of this many clips,
# so that one clip's row (`mersemi audit clip`) is read from one row group, not the whole file.
ARTIFACT_ROW_GROUP = 8192


def part_name(clip_ids: list[str], media_keys: list[str | None]) -> str:
    """Content-derived file name of a part: the same shard of the same media gets the same name."""
    h = hashlib.sha256("\n".join(f"{c}:{m}" for c, m in sorted(zip(clip_ids, media_keys,
                                                                    strict=True))).encode())
    return h.hexdigest()[:20] + ".parquet"


def table_from_rows(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)


class FeatureCache:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.root)!r})"

    def folder(self, extractor_key: str) -> Path:
        return self.root / extractor_key

    def parts(self, extractor_key: str) -> list[Path]:
        folder = self.folder(extractor_key)
        return sorted(folder.glob("*.parquet")) if folder.is_dir() else []

    def write_part(self, extractor_key: str, rows: list[dict]) -> Path:
        """Store one shard's rows; returns the part's path."""
        table = table_from_rows(rows)
        path = self.folder(extractor_key) / part_name([r["clip_id"] for r in rows],
                                                      [r["media_key"] for r in rows])
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        atomic_write(path, sink.getvalue().to_pybytes())
        return path

    def done(self, extractor_key: str) -> pd.DataFrame:
        """(clip_id, media_key) of every row already extracted under this key."""
        parts = self.parts(extractor_key)
        if not parts:
            return pd.DataFrame({"clip_id": pd.Series(dtype="string"),
                                 "media_key": pd.Series(dtype="string")})
        tables = [pq.read_table(p, columns=["clip_id", "media_key"]) for p in parts]
        return pa.concat_tables(tables).to_pandas().drop_duplicates()

    def collect(self, extractor_key: str, wanted: pd.DataFrame) -> pa.Table:
        """The cached rows for the (clip_id, media_key) pairs in `wanted`, one per clip."""
        keys = set(zip(wanted["clip_id"], wanted["media_key"], strict=True))
        tables = []
        for part in self.parts(extractor_key):
            table = pq.read_table(part)
            ids = table.column("clip_id").to_pylist()
            media = table.column("media_key").to_pylist()
            mask = [(c, m) in keys for c, m in zip(ids, media, strict=True)]
            if any(mask):
                tables.append(table.filter(pa.array(mask)))
        if not tables:
            return SCHEMA.empty_table()
        table = pa.concat_tables(tables)
        # A clip extracted twice (two crashed runs sharding differently) keeps one row.
        frame = table.select(["clip_id"]).to_pandas()
        keep = ~frame.duplicated("clip_id", keep="last").to_numpy()
        table = table.filter(pa.array(keep))
        return table.sort_by("clip_id")


def _flat_lists(table: pa.Table, column: str) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Per chunk of a list<float> column (a Parquet row group): (its first row, its offsets
    (n + 1,) from 0, its flat float32 values), without a Python object per row and without
    concatenating the chunks (a copy of the whole column)."""
    start = 0
    for arr in table.column(column).chunks:
        offsets = arr.offsets.to_numpy().astype(np.int64)
        values = arr.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        yield start, offsets - offsets[0], values[offsets[0]: offsets[-1]]
        start += len(arr)


def vectors(table: pa.Table | pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(clip ids, (N, D) float32 matrix with zeros where missing, (N,) bool mask of ok rows).

    From an Arrow table the matrix is filled from the list column's flat values in one copy
    (a pandas frame holds one numpy object per row: 2.6x the matrix at 100,000 clips)."""
    if isinstance(table, pa.Table):
        ok = np.asarray(table.column("status").to_numpy(zero_copy_only=False) == "ok", bool)
        dims = table.column("dim").to_numpy(zero_copy_only=False)[ok]
        dim = int(dims[0]) if len(dims) else 0
        out = np.zeros((table.num_rows, dim), dtype=np.float32)
        ids = table.column("clip_id").to_pylist()
        for start, offsets, values in _flat_lists(table, "vector"):
            rows = slice(start, start + len(offsets) - 1)
            lengths, here = np.diff(offsets), ok[rows]
            if (lengths[here] != dim).any():
                bad = np.asarray(ids[rows], object)[here & (lengths != dim)][:3]
                raise ValueError(f"feature vectors of ok rows must all have dim {dim}; "
                                 f"e.g. {list(bad)} do not")
            if not lengths[~here].any():             # the usual layout: only ok rows hold values
                out[rows][here] = values.reshape(-1, dim) if dim else values[:0].reshape(0, 0)
            else:
                for i in np.flatnonzero(here):
                    out[start + i] = values[offsets[i]: offsets[i] + dim]
        return ids, out, ok
    frame = table
    ok = (frame["status"] == "ok").to_numpy()
    dims = frame.loc[ok, "dim"]
    dim = int(dims.iloc[0]) if len(dims) else 0
    out = np.zeros((len(frame), dim), dtype=np.float32)
    for i, vec in enumerate(frame["vector"]):
        if ok[i]:
            out[i] = np.asarray(vec, dtype=np.float32)
    return frame["clip_id"].tolist(), out, ok


def release_arrow_memory() -> None:
    """Hand memory Arrow's pool kept after tables were dropped back to the OS (its allocator
    keeps freed blocks, which numpy and torch cannot reuse: at 100,000 clips ~350 MB)."""
    pa.default_memory_pool().release_unused()


def sequences(table: pa.Table | pd.DataFrame) -> tuple[list[str], list[np.ndarray | None]]:
    """(clip ids, per row its (seq_len, seq_dim) float32 sequence, or None where the row is not
    ok or has none). From an Arrow table each sequence is a view into the column's values."""
    if isinstance(table, pa.Table):
        status = table.column("status").to_numpy(zero_copy_only=False)
        seq_len = table.column("seq_len").to_numpy(zero_copy_only=False)
        seq_dim = table.column("seq_dim").to_numpy(zero_copy_only=False)
        valid = table.column("sequence").is_valid().to_numpy(zero_copy_only=False)
        wanted = (status == "ok") & valid
        seqs: list[np.ndarray | None] = [None] * table.num_rows
        for start, offsets, values in _flat_lists(table, "sequence"):
            for i in np.flatnonzero(wanted[start: start + len(offsets) - 1]):
                n, d = int(seq_len[start + i]), int(seq_dim[start + i])
                seqs[start + i] = values[offsets[i]: offsets[i] + n * d].reshape(n, d)
        return table.column("clip_id").to_pylist(), seqs
    status, sequence = table["status"].to_numpy(object), table["sequence"].to_numpy(object)
    seq_len, seq_dim = table["seq_len"].to_numpy(), table["seq_dim"].to_numpy()
    seqs = [np.asarray(sequence[j], np.float32).reshape(int(seq_len[j]), int(seq_dim[j]))
            if status[j] == "ok" and sequence[j] is not None else None for j in range(len(table))]
    return table["clip_id"].tolist(), seqs
