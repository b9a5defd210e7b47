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
# What training and prediction read of a feature artifact (tasks/train.build_bundle).
TRAINING_COLUMNS = ("clip_id", "status", "dim", "vector", "seq_len", "seq_dim", "sequence")
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


def vectors(table: pa.Table | pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(clip ids, (N, D) float32 matrix with zeros where missing, (N,) bool mask of ok rows).

    An Arrow table is read column-wise (its list column's values are one buffer): no array per
    row, as a frame's object column holds (at 100,000 clips a frame of the features is ~2.5x
    their matrix)."""
    if isinstance(table, pa.Table):
        ids, ok = table.column("clip_id").to_pylist(), _ok(table)
        dims = table.column("dim").to_numpy(zero_copy_only=False)[ok]
        dim = int(dims[0]) if len(dims) else 0
        values, offsets, lengths = _list_column(table, "vector")
        bad = np.flatnonzero(ok & (lengths != dim))
        if len(bad):
            i = int(bad[0])
            raise ValueError(f"feature vector of clip {ids[i]!r} has {lengths[i]} values; "
                             f"the set's dimension is {dim}")
        out = np.zeros((len(ids), dim), dtype=np.float32)
        if ok.any():
            used, spans = values[offsets[0]:offsets[-1]], np.diff(offsets)     # spans: nulls' too
            if (spans[~ok] == 0).all():            # only the ok rows have values: one reshape
                out[ok] = used.reshape(-1, dim)
            else:
                out[ok] = used[np.repeat(ok, spans)].reshape(-1, dim)
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


def sequences(table: pa.Table | pd.DataFrame) -> tuple[list[str], list[np.ndarray | None], np.ndarray]:
    """(clip ids, per clip its (T, D) float32 sequence or None, (N,) bool mask of clips with one).
    From an Arrow table each sequence is a view of the column's one values buffer."""
    if isinstance(table, pa.Table):
        ids, ok = table.column("clip_id").to_pylist(), _ok(table)
        values, offsets, lengths = _list_column(table, "sequence")
        seq_len = table.column("seq_len").to_numpy(zero_copy_only=False)
        seq_dim = table.column("seq_dim").to_numpy(zero_copy_only=False)
        seqs: list[np.ndarray | None] = [None] * len(ids)
        has = ok & (lengths > 0)
        for i in np.flatnonzero(has):
            shape = (int(seq_len[i]), int(seq_dim[i]))
            if shape[0] * shape[1] != lengths[i]:
                raise ValueError(f"feature sequence of clip {ids[i]!r} has {lengths[i]} values, "
                                 f"not seq_len x seq_dim = {shape[0]} x {shape[1]}")
            seqs[i] = values[offsets[i]:offsets[i + 1]].reshape(shape)
        return ids, seqs, has
    frame = table
    status, sequence = frame["status"].to_numpy(object), frame["sequence"].to_numpy(object)
    seq_len, seq_dim = frame["seq_len"].to_numpy(), frame["seq_dim"].to_numpy()
    seqs = [None] * len(frame)
    has = np.zeros(len(frame), bool)
    for i in range(len(frame)):
        if status[i] == "ok" and sequence[i] is not None:
            seqs[i] = np.asarray(sequence[i], np.float32).reshape(int(seq_len[i]), int(seq_dim[i]))
            has[i] = True
    return frame["clip_id"].tolist(), seqs, has


def _ok(table: pa.Table) -> np.ndarray:
    return np.asarray(table.column("status").to_numpy(zero_copy_only=False) == "ok", dtype=bool)


def _list_column(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the float32 values buffer, each row's offsets into it (N + 1), each row's length; a
    null row has length 0)."""
    column = table.column(name).combine_chunks()
    if isinstance(column, pa.ChunkedArray):          # a table of no rows
        column = pa.array([], type=column.type)
    offsets = column.offsets.to_numpy().astype(np.int64)
    values = column.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    lengths = np.diff(offsets)
    return values, offsets, np.where(column.is_valid().to_numpy(zero_copy_only=False), lengths, 0)