"""`mersemi train` and `mersemi predict` end to end on the synthetic corpus."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from storage.catalog import Catalog
from storage.feature_cache import TRAINING_COLUMNS
from storage.records import feature_frames, lazy_feature_frames, resolve_dataset
from storage.workspace import Workspace
from tasks.train import build_bundle, choose_experts
from tests.flows.test_cli import mersemi


def test_train_and_predict_write_models_metrics_and_a_submission(corpus_copy, tmp_path):
    ws = str(tmp_path / "ws")
    assert mersemi("ingest", str(corpus_copy), "-w", ws, "--json")[0] == 0
    code, _, text = mersemi(
        "features",
        "-w",
        ws,
        "--json",
        "--workers",
        "1",
        "--extractors",
        "audio_egemaps,text,au,audio_handcrafted",
    )
    assert code == 0, text
    # Two forked processes fit the fold models inside the flow run.
    code, trained, text = mersemi("train", "-w", ws, "--json", "--folds", "2", "--epochs", "4",
                                  "--seeds", "0", "--workers", "2")
    assert code == 0, text
    assert trained["n_train"] == 12 and trained["models"] == 4
    assert set(trained["cv_weighted_f1"]) == {"moe", "attention"}
    assert "expert:audio_text" in trained["cv_weighted_f1"]["moe"]
    code, predicted, text = mersemi("predict", "-w", ws, "--json", "--out", str(tmp_path / "sub.csv"))
    assert code == 0, text
    assert predicted["train_run"] == trained["run_id"] and predicted["candidates"] == 12
    submission = pd.read_csv(tmp_path / "sub.csv")
    candidates = pd.read_csv(corpus_copy / "track_all_candidates.csv")
    assert list(submission.columns) == ["name", "discrete"]
    assert sorted(submission["name"]) == sorted(candidates["name"])
    catalog = Catalog(tmp_path / "ws" / "catalog.duckdb")
    assert catalog.failed_checks() == {}
    with catalog.reader() as s:
        metrics = s.query("SELECT name, scope FROM metrics WHERE stage = 'train'")
        lineage = s.query(
            "SELECT count(*) AS n FROM artifact_inputs a JOIN artifacts b USING (artifact_id) "
            "WHERE b.stage = 'predict'"
        )["n"][0]
    assert ("weighted_f1", "moe/final") in set(map(tuple, metrics.values.tolist()))
    assert lineage > 0
    # Training loads only the columns it reads of each feature artifact.
    workspace = Workspace(tmp_path / "ws")
    frames, ids = feature_frames(workspace.catalog, workspace.artifacts,
                                 resolve_dataset(workspace.catalog, None).dataset, columns=TRAINING_COLUMNS)
    assert sorted(frames) == ["au", "audio_egemaps", "audio_handcrafted", "text"] and len(ids) == 4
    assert all(list(f.columns) == list(TRAINING_COLUMNS) and len(f) == 24 for f in frames.values())
    lazy, lazy_ids = lazy_feature_frames(workspace.catalog, workspace.artifacts,
                                         resolve_dataset(workspace.catalog, None).dataset, TRAINING_COLUMNS)
    assert lazy_ids == ids and sorted(lazy) == sorted(frames) and len(lazy) == 4
    streamed = lazy["au"]                                                   # record batches
    pd.testing.assert_frame_equal(pa.Table.from_batches(list(streamed)).to_pandas(), frames["au"])
    pd.testing.assert_frame_equal(pa.Table.from_batches(list(streamed)).to_pandas(), frames["au"])  # again
    # The bundle built from the streamed batches (column-wise) is the one built from the frames.
    specs = choose_experts(sorted(frames), [])
    clips = sorted(frames["au"]["clip_id"])
    from_frames, from_tables = build_bundle(clips, frames, specs), build_bundle(clips, lazy, specs)
    assert [e.name for e in from_tables.experts] == [e.name for e in from_frames.experts]
    assert {e.kind for e in from_tables.experts} >= {"vector", "sequence", "joint"}
    for a, b in zip(from_frames.experts, from_tables.experts, strict=True):
        assert np.array_equal(a.present, b.present)
        assert (a.x is None and b.x is None) or np.array_equal(a.x, b.x)
        for sa, sb in ((a.seqs, b.seqs), (a.seqs2, b.seqs2)):
            assert (sa is None and sb is None) or all(
                (u is None and v is None) or np.array_equal(u, v) for u, v in zip(sa, sb, strict=True))


def test_predict_before_train_is_a_clear_error(corpus_copy, tmp_path):
    ws = str(tmp_path / "ws")
    mersemi("ingest", str(corpus_copy), "-w", ws, "--json")
    code, _, text = mersemi("predict", "-w", ws)
    assert code == 2 and "run `mersemi train` first" in text
