"""The Parquet artifact store: one root folder, `<run_id>/<stage>/<name>.parquet`.

Writes are atomic (a temporary file in the same folder, fsync, then rename), so a reader or
a crash never sees half a file; each artifact carries the sha256 of its bytes, which the
catalog records and later stages use as a content key.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]*$")


@dataclass(frozen=True)
class ArtifactRef:
    """What the catalog records about one stored artifact (paths relative to the store)."""

    artifact_id: str
    run_id: str
    stage: str
    name: str
    path: str
    sha256: str
    n_rows: int
    n_bytes: int

    def as_dict(self) -> dict:
        return asdict(self)


def _segment(kind: str, value: str) -> str:
    if not SEGMENT.match(value) or ".." in value:
        raise ValueError(
            f"artifact {kind} {value!r} must be letters, digits, '.', '_', '=' or '-' "
            "and must not contain '..'"
        )
    return value


# pyarrow's default row group length.
ROW_GROUP_ROWS = 1 << 20


def parquet_bytes(frame: pd.DataFrame | pa.Table, row_group_size: int | None = None) -> bytes:
    """Parquet encoding of a frame or table; the same data gives the same bytes (no index).
    `row_group_size` None: pyarrow's default (row groups of up to 1,048,576 rows).

    A frame is converted to Arrow one row group at a time (the bytes are those of converting
    it whole): a mining round's 3.2 M prediction rows at 100,000 candidates would otherwise
    hold a second, Arrow copy of every string while the file is encoded."""
    sink = io.BytesIO()
    if isinstance(frame, pa.Table):
        pq.write_table(frame, sink, compression="zstd", row_group_size=row_group_size)
        return sink.getvalue()
    step = row_group_size or ROW_GROUP_ROWS
    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
        for start in range(0, max(len(frame), 1), step):
            part = pa.Table.from_pandas(frame.iloc[start:start + step], schema=schema, preserve_index=False)
            writer.write_table(part, row_group_size=step)
    return sink.getvalue()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` holds either the old or the new bytes, never a part.

    A write the disk refuses (full, over quota, file too large) removes the temporary file and
    raises OSError naming `path`; the previous file, if any, is left as it was."""
    with atomic_file(path, f"{len(data)} bytes") as f:
        f.write(data)


@contextmanager
def atomic_file(path: Path, what: str = "") -> Iterator[BinaryIO]:
    """A file to write `path` through: a temporary file beside it, flushed, fsynced and renamed
    onto `path` when the block ends, removed if the block raises (`atomic_write`'s rules; `what`
    describes the data in the error)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.errno is None:
            raise
        detail = f" ({what})" if what else ""
        raise OSError(exc.errno, f"{exc.strerror} while writing {path}{detail}; "
                                 "the previous file is unchanged") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read a MB at a time (media files, streamed artifacts)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class ArtifactStore:
    """Parquet files under one root folder (Kedro-style contract: save, load, exists)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.root)!r})"

    def relpath(self, run_id: str, stage: str, name: str) -> str:
        return "/".join(
            (_segment("run id", run_id), _segment("stage", stage), _segment("name", name))
        ) + ".parquet"

    def save(self, frame: pd.DataFrame | pa.Table, run_id: str, stage: str, name: str,
             data: bytes | None = None, row_group_size: int | None = None) -> ArtifactRef:
        """Store `frame` (a DataFrame or Arrow table, or its already-encoded Parquet `data`).
        `row_group_size`: rows per row group (a table sorted by a key, written in several row
        groups, lets a reader filtering on that key skip all groups but one)."""
        rel = self.relpath(run_id, stage, name)
        data = parquet_bytes(frame, row_group_size) if data is None else data
        atomic_write(self.root / rel, data)
        return ArtifactRef(
            artifact_id=rel[: -len(".parquet")], run_id=run_id, stage=stage, name=name,
            path=rel, sha256=sha256_bytes(data),
            n_rows=frame.num_rows if isinstance(frame, pa.Table) else len(frame), n_bytes=len(data),
        )

    def save_frames(self, frames: Iterable[pd.DataFrame], run_id: str, stage: str, name: str,
                    schema: pa.Schema | None = None) -> ArtifactRef:
        """Store the rows of `frames` as one Parquet artifact, each frame encoded as it comes (a
        row group of it) and written to disk, so the whole table is never in memory, neither as
        one frame nor as its bytes. The same frames give the same bytes. The file's schema is
        `schema`, else the first frame's (then at least one frame: an empty one for no rows)."""
        rel = self.relpath(run_id, stage, name)
        path, rows, writer = self.root / rel, 0, None
        with atomic_file(path, "a table written a row group at a time") as f:
            try:
                if schema is not None:
                    writer = pq.ParquetWriter(f, schema, compression="zstd")
                for frame in frames:
                    if writer is None:
                        schema = pa.Schema.from_pandas(frame, preserve_index=False)
                        writer = pq.ParquetWriter(f, schema, compression="zstd")
                    part = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
                    writer.write_table(part, row_group_size=ROW_GROUP_ROWS)
                    rows += len(frame)
                if writer is None:
                    raise ValueError(f"artifact {rel}: no frames to store (give an empty frame for no rows)")
            finally:
                if writer is not None:
                    writer.close()
        return ArtifactRef(artifact_id=rel[: -len(".parquet")], run_id=run_id, stage=stage, name=name,
                           path=rel, sha256=sha256_file(path), n_rows=rows, n_bytes=path.stat().st_size)

    def save_bytes(self, data: bytes, run_id: str, stage: str, name: str, suffix: str) -> ArtifactRef:
        """Store a non-tabular artifact (a model file, a CSV) under the same layout and rules."""
        if not SEGMENT.match(suffix.lstrip(".")):
            raise ValueError(f"artifact suffix {suffix!r} must be letters or digits")
        rel = self.relpath(run_id, stage, name)[: -len(".parquet")] + suffix
        atomic_write(self.root / rel, data)
        return ArtifactRef(artifact_id=rel[: -len(suffix)], run_id=run_id, stage=stage, name=name,
                           path=rel, sha256=sha256_bytes(data), n_rows=0, n_bytes=len(data))

    def path_of(self, artifact_id: str) -> Path:
        return self.root / f"{artifact_id}.parquet"

    def path(self, ref: ArtifactRef | str) -> Path:
        rel = ref.path if isinstance(ref, ArtifactRef) else ref
        return self.root / rel

    def exists(self, ref: ArtifactRef | str) -> bool:
        return self.path(ref).is_file()

    def load_table(self, ref: ArtifactRef | str, columns: list[str] | None = None) -> pa.Table:
        path = self.path(ref)
        if not path.is_file():
            raise FileNotFoundError(f"artifact {path} is missing from the store")
        return pq.read_table(path, columns=columns)

    def load(self, ref: ArtifactRef | str, verify: bool = False,
             columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Read an artifact (only `columns`, if given); with `verify`, refuse one whose bytes
        differ from its recorded hash."""
        path = self.path(ref)
        if not path.is_file():
            raise FileNotFoundError(f"artifact {path} is missing from the store")
        if verify and isinstance(ref, ArtifactRef):
            digest = sha256_bytes(path.read_bytes())
            if digest != ref.sha256:
                raise ValueError(
                    f"artifact {path} was changed after it was written "
                    f"(sha256 {digest[:12]}, catalog says {ref.sha256[:12]})"
                )
        if columns is not None:
            missing = sorted(set(columns) - set(pq.read_schema(path).names))
            if missing:
                raise ValueError(f"artifact {path} has no column {', '.join(missing)}")
        return pd.read_parquet(path, columns=None if columns is None else list(columns))
