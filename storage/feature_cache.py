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
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from storage.artifacts import atomic_write
from storage.ids import IdIndex

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


class ParquetBatches:
    """A Parquet file's rows a record batch (row group) at a time, read again on each iteration:
    what `gather_vectors` / `gather_sequences` read a feature artifact from, so that the file is
    never held whole beside the matrix it fills."""

    def __init__(self, path: str | Path, columns: Sequence[str] | None = None) -> None:
        self.path = Path(path)
        self.columns = None if columns is None else list(columns)

    def __repr__(self) -> str:
        return f"ParquetBatches({str(self.path)!r})"

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        with pq.ParquetFile(self.path) as file:
            for group in range(file.num_row_groups):   # iter_batches would merge row groups
                yield from file.read_row_group(group, columns=self.columns).to_batches()


# A feature set as the readers below take it: a table, a frame of FEATURE_COLUMNS, or record
# batches (ParquetBatches).
FeatureSource = pa.Table | pd.DataFrame | Iterable[pa.RecordBatch]


def gather_vectors(source: FeatureSource, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(the (len(ids), D) float32 matrix of clips `ids` in that order, zeros where a clip has no
    row or no ok vector; the (len(ids),) bool mask of clips with one).

    Each batch is copied straight into the one matrix (its list column's values are one
    buffer: no array per row), so reading a file costs the matrix plus one row group. A clip
    with several rows takes its last. A vector of the wrong length is an error naming the clip."""
    index = _index(ids)
    out, present, dim = None, np.zeros(len(ids), dtype=bool), None
    for batch in _batches(source):
        bids, ok, values, offsets, lengths = _rows(batch, "vector")
        if dim is None and ok.any():
            dim = int(batch.column("dim").to_numpy(zero_copy_only=False)[ok][0])
            out = np.zeros((len(ids), dim), dtype=np.float32)
        bad = np.flatnonzero(ok & (lengths != (dim or 0)))
        if len(bad):
            i = int(bad[0])
            raise ValueError(f"feature vector of clip {bids[i]!r} has {lengths[i]} values; "
                             f"the set's dimension is {dim}")
        pos = index.positions(bids)
        wanted = pos >= 0
        if out is not None:
            if ok.any():
                used, spans = values[offsets[0]:offsets[-1]], np.diff(offsets)  # spans: nulls' too
                if not (spans[~ok] == 0).all():        # rows not ok kept values: skip them
                    used = used[np.repeat(ok, spans)]
                take = wanted[ok]
                out[pos[ok][take]] = used.reshape(-1, dim)[take]
            out[pos[wanted & ~ok]] = 0                 # a later row of the clip has none
        present[pos[wanted]] = ok[wanted]
    return (np.zeros((len(ids), 0), np.float32) if out is None else out), present


class Ragged(Sequence):
    """Per clip a (T, D) float32 sequence or None, as a few flat value buffers (the batches'
    own) and four integers per clip: its buffer (-1: none), where it starts, T and D.

    A list of per-clip arrays costs a numpy object (~130 bytes) per clip, and each process forked
    from the one holding it copies the pages those objects sit on as their reference counts
    change; here a clip's view is made when it is asked for. `take` selects clips without copying
    a value."""

    __slots__ = ("buffers", "buffer", "start", "steps", "width")

    def __init__(self, buffers: Sequence[np.ndarray], buffer: np.ndarray, start: np.ndarray,
                 steps: np.ndarray, width: np.ndarray) -> None:
        self.buffers = list(buffers)
        self.buffer, self.start = np.asarray(buffer, np.int32), np.asarray(start, np.int64)
        self.steps, self.width = np.asarray(steps, np.int32), np.asarray(width, np.int32)

    @classmethod
    def empty(cls, n: int) -> Ragged:
        return cls([], np.full(n, -1, np.int32), np.zeros(n, np.int64), np.zeros(n, np.int32),
                   np.zeros(n, np.int32))

    def __len__(self) -> int:
        return len(self.buffer)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.take(np.arange(len(self))[i])
        return self.views([i])[0]

    def views(self, idx) -> list[np.ndarray | None]:
        """The sequences of clips `idx` (None where a clip has none): `[self[i] for i in idx]`,
        at a third of its cost."""
        idx = np.asarray(idx, dtype=np.intp)
        buffers, out = self.buffers, []
        for b, s, t, d in zip(self.buffer[idx].tolist(), self.start[idx].tolist(),
                              self.steps[idx].tolist(), self.width[idx].tolist(), strict=True):
            out.append(None if b < 0 else buffers[b][s:s + t * d].reshape(t, d))
        return out

    def take(self, idx) -> Ragged:
        idx = np.asarray(idx, dtype=np.intp)
        return Ragged(self.buffers, self.buffer[idx], self.start[idx], self.steps[idx], self.width[idx])

    def __repr__(self) -> str:
        return f"Ragged({len(self)} clips, {int((self.buffer >= 0).sum())} with a sequence)"


def gather_sequences(source: FeatureSource, ids: Sequence[str]) -> tuple[Ragged, np.ndarray]:
    """(per clip of `ids` its (T, D) float32 sequence or None, as a Ragged over the batches' value
    buffers; the bool mask of clips with one). A clip with several rows takes its last. A
    sequence whose length is not seq_len x seq_dim is an error naming the clip."""
    index = _index(ids)
    out = Ragged.empty(len(ids))
    present = np.zeros(len(ids), dtype=bool)
    for batch in _batches(source):
        bids, ok, values, offsets, lengths = _rows(batch, "sequence")
        seq_len = batch.column("seq_len").to_numpy(zero_copy_only=False)
        seq_dim = batch.column("seq_dim").to_numpy(zero_copy_only=False)
        has = ok & (lengths > 0)
        steps = np.where(has, np.nan_to_num(seq_len.astype(float)), 0).astype(np.int64)
        width = np.where(has, np.nan_to_num(seq_dim.astype(float)), 0).astype(np.int64)
        bad = np.flatnonzero(has & (steps * width != lengths))
        if len(bad):
            i = int(bad[0])
            raise ValueError(f"feature sequence of clip {bids[i]!r} has {lengths[i]} values, "
                             f"not seq_len x seq_dim = {steps[i]} x {width[i]}")
        pos = index.positions(bids)
        wanted = pos >= 0
        rows = np.flatnonzero(wanted)
        _, last = np.unique(pos[rows][::-1], return_index=True)   # a clip's last row in the batch
        rows = rows[len(rows) - 1 - last]
        at = pos[rows]
        if has[rows].any():
            out.buffers.append(values)
        out.buffer[at] = np.where(has[rows], len(out.buffers) - 1, -1)
        out.start[at], out.steps[at], out.width[at] = offsets[rows], steps[rows], width[rows]
        present[at] = has[rows]
    return out, present


def vectors(table: pa.Table | pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(clip ids, (N, D) float32 matrix with zeros where missing, (N,) bool mask of ok rows) of
    a whole feature set (one row per clip)."""
    ids = _clip_ids(table)
    return (ids, *gather_vectors(table, ids))


def sequences(table: pa.Table | pd.DataFrame) -> tuple[list[str], Ragged, np.ndarray]:
    """(clip ids, per clip its (T, D) float32 sequence or None, (N,) bool mask of clips with one)
    of a whole feature set (one row per clip)."""
    ids = _clip_ids(table)
    return (ids, *gather_sequences(table, ids))


def _clip_ids(table: pa.Table | pd.DataFrame) -> list[str]:
    if isinstance(table, pd.DataFrame):
        return table["clip_id"].tolist()
    return table.column("clip_id").to_pylist()


def _index(ids: Sequence[str]) -> IdIndex:
    return IdIndex(ids, "clip {!r} is asked for twice: gather each clip once")


def _batches(source: FeatureSource) -> Iterable[pa.RecordBatch]:
    if isinstance(source, pd.DataFrame):
        names = [n for n in FEATURE_COLUMNS if n in source.columns]
        source = pa.Table.from_pandas(source[names], preserve_index=False,
                                      schema=pa.schema([SCHEMA.field(n) for n in names]))
    return source.to_batches() if isinstance(source, pa.Table) else source


def _rows(batch: pa.RecordBatch, name: str
          ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(clip ids, the ok mask, the list column's float32 values buffer, each row's offsets into
    it (N + 1), each row's length: 0 for a null row)."""
    ids = batch.column("clip_id").to_pylist()
    status = batch.column("status").to_numpy(zero_copy_only=False)
    ok = np.asarray(status == "ok", dtype=bool)
    column = batch.column(name)
    offsets = column.offsets.to_numpy().astype(np.int64)
    values = column.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    lengths = np.diff(offsets)
    return ids, ok, values, offsets, np.where(column.is_valid().to_numpy(zero_copy_only=False), lengths, 0)
