"""The Parquet artifact store: round trips, content hashes, atomic writes."""

from __future__ import annotations

import io
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage.artifacts import ArtifactStore, parquet_bytes, sha256_bytes


def frame(n=5):
    return pd.DataFrame({"clip_id": [f"c{i}" for i in range(n)], "p": [i / n for i in range(n)]})


def test_save_load_round_trip_and_hash(tmp_path):
    store = ArtifactStore(tmp_path)
    ref = store.save(frame(), "run-1", "ingest", "clips")
    assert ref.path == "run-1/ingest/clips.parquet"
    assert ref.artifact_id == "run-1/ingest/clips"
    assert ref.n_rows == 5
    assert ref.sha256 == sha256_bytes((tmp_path / ref.path).read_bytes())
    pd.testing.assert_frame_equal(store.load(ref, verify=True), frame())


def test_same_frame_same_bytes(tmp_path):
    store = ArtifactStore(tmp_path)
    assert store.save(frame(), "a", "s", "x").sha256 == store.save(frame(), "b", "s", "x").sha256
    assert store.save(frame(6), "c", "s", "x").sha256 != store.save(frame(), "d", "s", "x").sha256


def test_verify_refuses_a_changed_file(tmp_path):
    store = ArtifactStore(tmp_path)
    ref = store.save(frame(), "run-1", "ingest", "clips")
    store.save(frame(7), "run-1", "ingest", "clips")          # overwritten behind the ref's back
    with pytest.raises(ValueError, match="was changed after it was written"):
        store.load(ref, verify=True)


def test_failed_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    ref = store.save(frame(), "run-1", "ingest", "clips")
    before = (tmp_path / ref.path).read_bytes()

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="No space left"):
        store.save(frame(9), "run-1", "ingest", "clips")
    assert (tmp_path / ref.path).read_bytes() == before
    assert os.listdir(tmp_path / "run-1" / "ingest") == ["clips.parquet"]


@pytest.mark.parametrize("run_id,stage,name", [("..", "s", "x"), ("r", "a/b", "x"),
                                                ("r", "s", "../../etc"), ("r", "s", "")])
def test_segments_cannot_escape_the_store(tmp_path, run_id, stage, name):
    with pytest.raises(ValueError, match="must be letters"):
        ArtifactStore(tmp_path).save(frame(), run_id, stage, name)


def test_missing_artifact_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing from the store"):
        ArtifactStore(tmp_path).load("r/s/x.parquet")


def test_row_groups_let_a_key_filter_read_one_group(tmp_path):
    store = ArtifactStore(tmp_path)
    frame = pd.DataFrame({"clip_id": [f"c{i:03d}" for i in range(10)], "x": range(10)})
    one = store.save(frame, "r1", "features", "one")
    many = store.save(frame, "r1", "features", "many", row_group_size=4)
    assert pq.ParquetFile(store.path(one.path)).num_row_groups == 1
    assert pq.ParquetFile(store.path(many.path)).num_row_groups == 3
    assert store.load(many).equals(store.load(one))
    # The sorted key's statistics leave one group whose range holds the clip.
    meta = pq.ParquetFile(store.path(many.path)).metadata
    ranges = [(meta.row_group(g).column(0).statistics.min, meta.row_group(g).column(0).statistics.max)
              for g in range(meta.num_row_groups)]
    assert [lo <= "c005" <= hi for lo, hi in ranges] == [False, True, False]


def test_a_frame_encoded_a_row_group_at_a_time_has_the_bytes_of_the_whole():
    rng = np.random.default_rng(0)
    big = pd.DataFrame({"clip_id": [f"c{i}" for i in range(10_000)],
                          "head": np.repeat(np.array(["final", "fused"], dtype=object), 5_000),
                          "note": [None if i % 3 else "x" for i in range(10_000)],
                          "p": rng.random(10_000).astype(np.float32)})
    whole = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(big, preserve_index=False), whole, compression="zstd",
                   row_group_size=4096)
    assert parquet_bytes(big, 4096) == whole.getvalue()
    assert pq.ParquetFile(io.BytesIO(parquet_bytes(big, 4096))).num_row_groups == 3
    assert pq.ParquetFile(io.BytesIO(parquet_bytes(big.iloc[:0]))).metadata.num_rows == 0
