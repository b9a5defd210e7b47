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
    # Only the columns asked for (the learning stages read 5 of the registry's 22).
    assert list(store.load(ref, verify=True, columns=["p"]).columns) == ["p"]
    with pytest.raises(ValueError, match=r"artifact .*clips.parquet has no column nope"):
        store.load(ref, columns=["p", "nope"])


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


def test_frames_stored_as_they_come_read_back_as_one_table(tmp_path):
    store = ArtifactStore(tmp_path)
    whole = frame(12).assign(head=pd.Categorical(["a", "b", "a"] * 4, categories=["a", "b"]))
    parts = [whole.iloc[:5], whole.iloc[5:5], whole.iloc[5:]]
    ref = store.save_frames(iter(parts), "run-1", "train", "predictions")
    assert ref.n_rows == 12 and ref.n_bytes == (tmp_path / ref.path).stat().st_size
    assert ref.sha256 == sha256_bytes((tmp_path / ref.path).read_bytes())
    pd.testing.assert_frame_equal(store.load(ref, verify=True), whole)
    assert pq.ParquetFile(tmp_path / ref.path).num_row_groups == 3          # a row group per frame
    again = store.save_frames(iter(parts), "run-2", "train", "predictions")
    assert again.sha256 == ref.sha256
    empty = store.save_frames([whole.iloc[:0]], "run-3", "train", "predictions")
    assert empty.n_rows == 0 and list(store.load(empty).columns) == list(whole.columns)
    with pytest.raises(ValueError, match="no frames to store"):
        store.save_frames([], "run-4", "train", "predictions")
    assert not (tmp_path / "run-4" / "train" / "predictions.parquet").exists()


def test_frames_that_fail_half_way_leave_the_previous_file_and_no_temp(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    ref = store.save_frames([frame()], "run-1", "train", "predictions")
    before = (tmp_path / ref.path).read_bytes()

    def broken():
        yield frame(3)
        raise RuntimeError("the fold results ran out")

    with pytest.raises(RuntimeError, match="ran out"):
        store.save_frames(broken(), "run-1", "train", "predictions")

    def no_space(fd):                   # the disk fills as the file is synced
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left on device while writing .*predictions.parquet"):
        store.save_frames([frame(8)], "run-1", "train", "predictions")
    assert (tmp_path / ref.path).read_bytes() == before
    assert os.listdir(tmp_path / "run-1" / "train") == ["predictions.parquet"]
