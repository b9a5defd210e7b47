"""The train and predict stages as plain functions, on generated feature frames."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from models.baseline import FusionClassifier
from storage.artifacts import ArtifactStore
from storage.feature_cache import SCHEMA
from tasks import train as train_module
from tasks.predict import fold_of, load_models, majority_label, predict, save_predictions
from tasks.train import (
    FoldJob,
    LogMean,
    PoolPredictions,
    TrainConfig,
    build_bundle,
    choose_experts,
    cross_validate,
    fit_folds,
    fold_jobs,
    mean_log,
    prediction_frame,
    save_training,
    train,
    training_labels,
    training_set,
)

LABELS = ("neutral", "happy", "sad")
ROOT = Path(__file__).resolve().parents[2]


def feature_frame(name, ids, y, dim, rng, seq=False, missing=()):
    rows = []
    for cid, label in zip(ids, y, strict=True):
        if cid in missing:
            rows.append(
                {
                    "clip_id": cid,
                    "media_key": "m",
                    "extractor": name,
                    "extractor_key": name,
                    "status": "missing",
                    "reason": "no face",
                    "dim": None,
                    "vector": None,
                    "seq_len": None,
                    "seq_dim": None,
                    "sequence": None,
                    "extra": None,
                }
            )
            continue
        vec = rng.normal(0, 1, dim).astype(np.float32)
        vec[label] += 2.5
        s = rng.normal(label, 1, (4, 3)).astype(np.float32) if seq else None
        rows.append(
            {
                "clip_id": cid,
                "media_key": "m",
                "extractor": name,
                "extractor_key": name,
                "status": "ok",
                "reason": None,
                "dim": dim,
                "vector": vec,
                "seq_len": 4 if seq else None,
                "seq_dim": 3 if seq else None,
                "sequence": None if s is None else s.ravel(),
                "extra": None,
            }
        )
    return pd.DataFrame(rows, columns=SCHEMA.names)


@pytest.fixture
def corpus():
    rng = np.random.default_rng(0)
    n_train, n_cand = 30, 12
    ids = [f"c{i:03d}" for i in range(n_train + n_cand)]
    y = rng.integers(0, 3, len(ids))
    y[:n_train] = np.arange(n_train) % 3
    registry = pd.DataFrame(
        {
            "clip_id": ids,
            "name": [f"clip{i}" for i in range(len(ids))],
            "split": ["train"] * n_train + ["candidate"] * n_cand,
            "label": [LABELS[k] for k in y[:n_train]] + [None] * n_cand,
            "status": ["ok"] * (len(ids) - 1) + ["error"],
        }
    )
    features = {
        "audio_handcrafted": feature_frame("audio_handcrafted", ids, y, 6, rng, seq=True),
        "text": feature_frame("text", ids, y, 5, rng, seq=True),
        "au": feature_frame("au", ids, y, 4, rng, seq=True, missing={"c001", "c035"}),
    }
    return registry, features, y


def test_default_experts_include_temporal_and_joint():
    names = [s.name for s in choose_experts(["au", "audio_handcrafted", "text"], None)]
    assert names == ["au", "audio_handcrafted", "text", "au_seq", "audio_text"]
    with pytest.raises(ValueError, match="unknown or unavailable expert"):
        choose_experts(["text"], ["audio_text"])


def test_bundle_masks_missing_features(corpus):
    registry, features, _ = corpus
    bundle = build_bundle(registry["clip_id"].tolist(), features, choose_experts(list(features), None))
    au = bundle.experts[bundle.names.index("au")]
    assert not au.present[1] and au.present[0] and (au.x[1] == 0).all()
    seq = bundle.experts[bundle.names.index("au_seq")]
    assert seq.seqs[1] is None and seq.seqs[0].shape == (4, 3)


class Reading(dict):
    """Feature frames that log every read and drop (as storage.records.FeatureFrames reads)."""

    def __init__(self, frames):
        super().__init__(frames)
        self.log = []

    def __getitem__(self, name):
        self.log.append(("read", name))
        return super().__getitem__(name)

    def drop(self, name):
        self.log.append(("drop", name))


def test_a_bundle_drops_each_feature_set_once_its_last_expert_is_built(corpus):
    registry, features, _ = corpus
    specs = choose_experts(list(features), None)       # au, audio_handcrafted, text, au_seq, audio_text
    ids = registry["clip_id"].tolist()
    reading = Reading(features)
    lazy, eager = build_bundle(ids, reading, specs), build_bundle(ids, features, specs)
    # au is let go after au_seq, its last reader, before the audio-text pair is read.
    assert reading.log == [("read", "au"), ("read", "audio_handcrafted"), ("read", "text"), ("read", "au"),
                           ("drop", "au"), ("read", "audio_handcrafted"), ("read", "text"),
                           ("drop", "audio_handcrafted"), ("drop", "text")]
    for a, b in zip(lazy.experts, eager.experts, strict=True):
        assert (a.present == b.present).all() and (a.x is None or (a.x == b.x).all())


def test_training_labels_add_extra_without_overriding_humans(corpus):
    registry, _, _ = corpus
    extra = pd.DataFrame({"clip_id": ["c000", "c031"], "label": ["sad", "happy"], "weight": [0.5, 0.7]})
    labels = training_labels(registry, extra).set_index("clip_id")
    assert len(labels) == 31
    assert labels.loc["c000", "label"] == registry.loc[0, "label"] and labels.loc["c000", "weight"] == 1.0
    assert labels.loc["c031", ["label", "weight"]].tolist() == ["happy", 0.7]
    assert labels["pseudo"].sum() == 1 and labels.loc["c031", "pseudo"] and not labels.loc["c000", "pseudo"]


def test_a_mining_run_keeps_only_the_labelled_rows_the_rounds_training_reads(corpus):
    registry, _, _ = corpus
    # An unusable labelled clip and a removed one: training skips them from either registry.
    registry.loc[2, "status"], registry.loc[4, "status"] = "error", "removed"
    kept = train_module.labelled_rows(registry)
    assert len(kept) == 30 and set(kept["split"]) == {"train"}
    extra = pd.DataFrame({"clip_id": ["c031"], "label": ["happy"], "weight": [0.7]})
    pd.testing.assert_frame_equal(training_labels(kept, extra), training_labels(registry, extra))
    assert len(training_labels(kept)) == 28


def test_folds_split_the_human_labels_and_every_fold_trains_on_the_pseudo_labels():
    y = np.arange(40) % 2
    pseudo = np.zeros(40, bool)
    pseudo[25:] = True
    config = TrainConfig(folds=5, seeds=(0, 1), fusions=("moe",))
    jobs = fold_jobs(y, config, pseudo)
    assert len(jobs) == 10
    for seed in (0, 1):
        va = np.concatenate([j.va for j in jobs if j.seed == seed])
        assert sorted(va) == list(range(25))          # each human label validated once, no pseudo
    for job in jobs:
        assert set(range(25, 40)) <= set(job.tr) and not set(job.tr) & set(job.va)
        assert len(job.tr) + len(job.va) == 40
    # With no pseudo-labels the folds are those of the human labels alone, as before.
    plain, none = fold_jobs(y[:25], config), fold_jobs(y[:25], config, np.zeros(25, bool))
    assert all((a.tr == b.tr).all() and (a.va == b.va).all() for a, b in zip(plain, none, strict=True))


def test_pseudo_labels_train_but_the_scores_are_the_human_labels(corpus, tmp_path):
    registry, features, _ = corpus
    config = TrainConfig(folds=3, seeds=(0,), fusions=("moe",), model={"epochs": 3, "hidden": 16})
    cands = registry.loc[registry["split"] == "candidate", "clip_id"].tolist()[:6]
    extra = pd.DataFrame({"clip_id": cands, "label": ["sad", "happy"] * 3, "weight": 1.0})
    out = train(registry, features, LABELS, config, ArtifactStore(tmp_path), "r", extra_labels=extra)
    assert out["n_train"] == 36 and out["n_pseudo"] == 6
    oof = out["result"].oof
    humans = set(registry.loc[registry["split"] == "train", "clip_id"])
    assert set(oof["clip_id"]) == humans                       # out of fold: human labels only
    assert out["result"].metrics["moe"]["final"]["coverage"] == 1.0
    # Pseudo-labels do not count towards the folds' minimum.
    few = registry.assign(label=registry["label"].where(registry.index >= 28, None))
    few.loc[few.index < 28, "split"] = "candidate"
    many = pd.DataFrame({"clip_id": cands, "label": "sad", "weight": 1.0})
    with pytest.raises(ValueError, match="human-labelled"):
        train(few, features, LABELS, config, ArtifactStore(tmp_path / "b"), "r", extra_labels=many)


def test_mean_log_averages_in_log_space_and_ignores_nan():
    a = np.array([[0.9, 0.1], [np.nan, np.nan]])
    b = np.array([[0.5, 0.5], [0.2, 0.8]])
    out = mean_log([a, b])
    expected = np.sqrt([0.45, 0.05])
    assert np.allclose(out[0], expected / expected.sum()) and np.allclose(out[1], [0.2, 0.8])


def test_running_log_mean_is_nanmean_of_the_stacked_members_bit_for_bit():
    rng = np.random.default_rng(3)
    members = []
    for _ in range(5):
        p = rng.dirichlet(np.full(6, 0.3), size=2000).astype(np.float32)
        p[rng.random(2000) < 0.2] = np.nan                   # clips the expert lacks
        p[rng.random((2000, 6)) < 0.01] = 0.0                # clipped to 1e-8 before the log
        members.append(p)
    members[0][:50] = np.nan                                 # one member lacks these clips...
    for m in members:
        m[:10] = np.nan                                      # ...and every member these
    logp = np.log(np.clip(np.stack(members), 1e-8, 1.0))
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        m = np.nanmean(logp, axis=0)
    with np.errstate(all="ignore"):
        expected = np.exp(m - np.nanmax(m, axis=1, keepdims=True))
        expected /= expected.sum(axis=1, keepdims=True)
    running = LogMean(np.float32)
    for p in members:
        running.add(p)
    got = running.result()
    assert got.dtype == np.float32 and np.array_equal(got, expected, equal_nan=True)
    # NaN exactly where every member is: the first 10 clips among them.
    assert np.isnan(got[:10]).all() and np.array_equal(np.isnan(got), np.isnan(np.stack(members)).all(axis=0))
    assert np.array_equal(mean_log(members), expected, equal_nan=True)
    # No member with a NaN (no count is kept), and the first NaN in the last member only.
    clean = [np.nan_to_num(m, nan=0.5) for m in members]
    late = [*clean[:-1], members[-1]]
    for variant in (clean, late):
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            m = np.nanmean(np.log(np.clip(np.stack(variant), 1e-8, 1.0)), axis=0)
            want = np.exp(m - np.nanmax(m, axis=1, keepdims=True))
            want /= want.sum(axis=1, keepdims=True)
        assert np.array_equal(mean_log(variant), want, equal_nan=True)


def test_pool_predictions_take_each_heads_members_by_seed_then_fold():
    ids, labels = ["a", "b"], ("happy", "sad")
    p = np.array([[0.6, 0.4], [0.3, 0.7]], np.float32)
    members = [{"fusion": "moe", "seed": "0", "fold": str(f)} for f in range(3)]
    pool = PoolPredictions(ids, labels, members, ["final"], keep_folds=False)
    pool.add(members[1], {"final": p})
    with pytest.raises(ValueError, match="added after seed/fold"):
        pool.add(members[0], {"final": p})
    with pytest.raises(ValueError, match=r"has heads \['fused'\] beyond"):
        pool.add(members[2], {"final": p, "fused": p})
    with pytest.raises(ValueError, match="2 rows for 3 clips"):
        PoolPredictions(["a", "b", "c"], labels, members, ["final"]).add(members[0], {"final": p})
    with pytest.raises(ValueError, match="not among the members"):
        pool.add({"fusion": "attention", "seed": "0", "fold": "2"}, {"final": p})
    # Not kept: only the means are handed out, and asking for every block is an error.
    assert [len(f) for f in pool.frames(means_only=True)] == [2]
    with pytest.raises(ValueError, match="not kept"):
        next(pool.frames())
    # Seeds and folds past 9 go by number, not as strings ("10" after "9").
    many = [{"fusion": "moe", "seed": "0", "fold": str(f)} for f in (9, 10)]
    ordered = PoolPredictions(ids, labels, many, ["final"])
    for key in many:
        ordered.add(key, {"final": p})
    assert [f["fold"].iloc[0] for f in ordered.frames()] == ["9", "10", "mean"]


def test_predictions_stored_as_the_fits_return_are_the_kept_blocks_bytes(corpus, tmp_path):
    registry, features, _ = corpus
    config = TrainConfig(folds=3, seeds=(1, 0), model={"epochs": 2, "hidden": 8})
    built = training_set(registry, features, config)
    labels = training_labels(registry)
    store = ArtifactStore(tmp_path)
    kept = cross_validate(built.bundle, labels, LABELS, config, built.predict_ids)
    assert kept.pool.n_fold_blocks == 2 * 3 * 8 and kept.pool.stored is None
    whole = save_training(kept, store, "kept", "train")["predictions"]
    streamed = cross_validate(built.bundle, labels, LABELS, config, built.predict_ids,
                              lambda frames: store.save_frames(frames, "streamed", "train", "predictions"))
    stored_ref = streamed.pool.stored
    assert streamed.pool.n_fold_blocks == 0                       # only the means are held
    assert stored_ref.sha256 == whole.sha256
    # Per seed and fold every head of both fusions (moe: 7, attention: 1), then their means.
    heads = len(kept.predictions.groupby(["fusion", "head"], observed=True))
    assert heads == 8
    assert stored_ref.n_rows == whole.n_rows == len(built.predict_ids) * (2 * 3 * heads + heads)
    pd.testing.assert_frame_equal(streamed.predictions, kept.predictions)
    # The fold models come by seed, then fold, whatever order the seeds were given in.
    assert [(m["seed"], m["fold"]) for m in streamed.models][::2] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1),
                                                                       (1, 2)]
    assert save_training(streamed, store, "streamed", "train")["predictions"] == stored_ref
    stored = store.load(stored_ref)
    mean = stored[stored["seed"] == "mean"].reset_index(drop=True)
    pd.testing.assert_frame_equal(mean, streamed.predictions, check_categorical=False)


def test_train_then_predict_every_candidate(corpus, tmp_path):
    registry, features, y = corpus
    store = ArtifactStore(tmp_path)
    config = TrainConfig(folds=3, seeds=(0, 1), model={"epochs": 6, "hidden": 16})
    out = train(registry, features, LABELS, config, store, "run-t")
    result = out["result"]
    assert out["n_train"] == 30 and out["n_predict"] == 11  # the error clip is skipped
    assert len(out["refs"]["models"]) == 2 * 3 * 2  # fusions x folds x seeds
    oof = result.oof[(result.oof["head"] == "final") & (result.oof["fusion"] == "moe")]
    assert oof.groupby("seed")["clip_id"].apply(lambda s: sorted(s)).map(len).tolist() == [30, 30]
    assert set(result.metrics) == {"moe", "attention"}
    assert {"final", "fused", "expert:au_seq", "expert:audio_text"} <= set(result.metrics["moe"])
    assert result.metrics["moe"]["expert:au"]["coverage"] == pytest.approx(29 / 30)
    mean = result.predictions[result.predictions["seed"] == "mean"]
    assert len(mean[(mean["fusion"] == "moe") & (mean["head"] == "final")]) == 11
    models = load_models(store, [r.path for r in out["refs"]["models"]])
    assert fold_of(models[0][0]) == ("moe", "0", "0")
    predictions, submission, summary = predict(registry, features, models, LABELS, majority_label(registry))
    assert len(submission) == 12 and submission["discrete"].isin(LABELS).all()
    assert summary["fallback"] == 1 and summary["fallback_clips"] == ["clip41"]
    assert submission.set_index("name").loc["clip41", "discrete"] == majority_label(registry)
    frame = predictions.frame()
    p = frame[frame["seed"] != "mean"]
    assert set(p["fold"]) == {"0", "1", "2"} and set(p["seed"]) == {"0", "1"}
    assert len(frame) == 11 * (len(p.groupby(["fusion", "seed", "fold", "head"], observed=True))
                               + len(p.groupby(["fusion", "head"], observed=True)))


def test_predict_stores_each_models_rows_as_it_goes(corpus, tmp_path):
    registry, features, _ = corpus
    store = ArtifactStore(tmp_path)
    config = TrainConfig(folds=3, seeds=(0,), model={"epochs": 2, "hidden": 8})
    out = train(registry, features, LABELS, config, store, "run-t")
    # Given out of order: the means still take each head's models by seed, then fold.
    models = load_models(store, [r.path for r in out["refs"]["models"]])[::-1]
    kept, submission, _ = predict(registry, features, models, LABELS, majority_label(registry))
    assert kept.stored is None
    whole = save_predictions(kept, submission, store, "kept")[0]
    streamed, submission2, _ = predict(
        registry, features, models, LABELS, majority_label(registry),
        store_predictions=lambda frames: store.save_frames(frames, "streamed", "predict", "predictions"))
    assert streamed.stored.sha256 == whole.sha256
    assert save_predictions(streamed, submission2, store, "streamed")[0] == streamed.stored
    pd.testing.assert_frame_equal(streamed.mean_frame(), kept.mean_frame())
    pd.testing.assert_frame_equal(submission2, submission)
    # The heads announced up front are the heads the models give.
    frame = kept.frame()
    for _, model in models:
        rows = frame[(frame["fusion"] == model.fusion) & (frame["seed"] == "mean")]
        assert set(rows["head"]) == set(FusionClassifier.output_heads(model.fusion, model.expert_names_))
    with pytest.raises(ValueError, match="unknown fusion"):
        FusionClassifier.output_heads("concat", ["au"])


def test_predict_hands_each_models_freed_heap_back_once_its_rows_are_stored(corpus, tmp_path, monkeypatch):
    import tasks.predict as predict_module

    registry, features, _ = corpus
    store = ArtifactStore(tmp_path)
    config = TrainConfig(folds=3, seeds=(0,), fusions=("attention",), model={"epochs": 1, "hidden": 8})
    out = train(registry, features, LABELS, config, store, "run-t")
    models = load_models(store, [r.path for r in out["refs"]["models"]])
    events = []
    monkeypatch.setattr(predict_module, "release_memory", lambda: events.append("release"))

    def stored(frames):
        events.extend(frame["fold"].iloc[0] for frame in frames)

    predict(registry, features, models, LABELS, majority_label(registry), store_predictions=stored)
    assert events == ["0", "release", "1", "release", "2", "release", "mean"]


def test_predict_reads_each_models_pool_from_its_own_file_a_chunk_at_a_time(corpus, tmp_path, monkeypatch):
    import functools

    import tasks.predict as predict_module

    registry, features, _ = corpus
    store = ArtifactStore(tmp_path / "store")
    config = TrainConfig(folds=3, seeds=(0,), fusions=("moe",), model={"epochs": 1, "hidden": 8})
    out = train(registry, features, LABELS, config, store, "run-t")
    models = load_models(store, [r.path for r in out["refs"]["models"]])
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(train_module.tempfile, "tempdir", None)   # TMPDIR is read again
    monkeypatch.setattr(predict_module, "PoolPredictions",
                        functools.partial(train_module.PoolPredictions, chunk_rows=4))
    reads, read = [], train_module.HeadFile.read

    def recorded(self, head, start=0, stop=None):
        reads.append(stop is not None and stop - start <= 4)
        return read(self, head, start, stop)

    monkeypatch.setattr(train_module.HeadFile, "read", recorded)
    seen = []

    def stored(frames):
        for frame in frames:
            on_disk = sorted(path.name for path in scratch.glob("mersemi-fits-*/model-*.f32"))
            seen.append((frame["fold"].iloc[0], on_disk))

    streamed, _, _ = predict(registry, features, models, LABELS, majority_label(registry),
                             store_predictions=stored)
    # Each model's rows come from its own file, read a chunk at a time, and the file is gone
    # before the next model predicts; the folder goes at the end.
    assert reads and all(reads)
    assert {(fold, tuple(files)) for fold, files in seen} == {
        ("0", ("model-0.f32",)), ("1", ("model-1.f32",)), ("2", ("model-2.f32",)), ("mean", ())}
    assert list(scratch.glob("mersemi-fits-*")) == []
    # The same fold models predicted the same candidates in training: the same means.
    trained = out["result"].pool
    for head in FusionClassifier.output_heads("moe", models[0][1].expert_names_):
        pd.testing.assert_frame_equal(streamed.probs("moe", head), trained.probs("moe", head))


def test_fold_models_fitted_by_two_processes_give_the_same_results(corpus, tmp_path):
    registry, features, _ = corpus
    config = TrainConfig(folds=3, seeds=(0,), model={"epochs": 4, "hidden": 16})
    one = train(registry, features, LABELS, config, ArtifactStore(tmp_path / "one"), "r")
    two = train(registry, features, LABELS, replace(config, workers=2), ArtifactStore(tmp_path / "two"), "r")
    a, b = one["result"], two["result"]
    pd.testing.assert_frame_equal(a.oof, b.oof)
    pd.testing.assert_frame_equal(a.predictions, b.predictions)
    assert [(m["fusion"], m["fold"], m["val_f1"], m["best_epoch"]) for m in a.models] == [
        (m["fusion"], m["fold"], m["val_f1"], m["best_epoch"]) for m in b.models]
    assert a.metrics == b.metrics


def test_a_pool_written_a_chunk_at_a_time_reads_back_as_one_prediction(monkeypatch, tmp_path):
    from tests.models.test_baseline import LABELS as THREE
    from tests.models.test_baseline import make_bundle

    bundle, y = make_bundle(n=700)
    rows = np.random.default_rng(5).permutation(len(bundle))[:650]
    monkeypatch.setattr(train_module, "PREDICT_CHUNK", 256)       # three chunks and a rest
    for fusion in ("moe", "attention"):
        model = FusionClassifier(THREE, fusion=fusion, epochs=2, seed=1, hidden=8).fit(bundle, y)
        whole = model.predict_proba(bundle, rows)
        stored = train_module.predict_to_file(model, bundle, rows, str(tmp_path / f"{fusion}.f32"))
        assert list(stored) == list(whole) and len(stored) == len(whole)
        for head, p in whole.items():          # bit for bit, NaN where an expert is absent
            np.testing.assert_array_equal(stored[head], p, err_msg=head)
        assert (tmp_path / f"{fusion}.f32").stat().st_size == len(whole) * 650 * 3 * 4
    empty = train_module.predict_to_file(model, bundle, np.array([], np.int64), str(tmp_path / "none.f32"))
    assert len(empty) == 0 and dict(empty) == {}


def test_fold_fits_hand_the_pool_on_in_files_removed_once_read(corpus, tmp_path, monkeypatch):
    registry, features, _ = corpus
    monkeypatch.setenv("TMPDIR", str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir()
    monkeypatch.setattr(train_module.tempfile, "tempdir", None)   # TMPDIR is read again
    config = TrainConfig(folds=3, seeds=(0,), fusions=("moe",), model={"epochs": 2, "hidden": 16},
                         workers=2)
    data = train_module.training_set(registry, features, config)
    labels = train_module.training_labels(registry)
    fold_data = train_module.fold_data(data.bundle, labels, LABELS, config, data.predict_ids)
    jobs = train_module.fold_jobs(fold_data.y, config)
    seen, frozen = [], []
    for fit in fit_folds(fold_data, jobs, workers=2):
        frozen.append(gc.get_freeze_count() > 0)
        pred = fit["pred"]
        assert isinstance(pred, train_module.HeadFile) and os.path.exists(pred.path)
        seen.append((pred.path, {head: pred[head] for head in pred}))
        # The fits read so far: their files are gone once the next is asked for.
        assert not any(os.path.exists(path) for path, _ in seen[:-1])
    # The folder too, at the end (torch may leave its own cache folder in TMPDIR: not ours).
    assert list((tmp_path / "scratch").glob("mersemi-fits-*")) == []
    # The objects shared with the workers are out of garbage collection while they run (no
    # collection copies their pages); the last fit comes after the workers ended.
    assert frozen == [True] * (len(jobs) - 1) + [False] and gc.get_freeze_count() == 0
    # One worker hands the pool on in files the same way, with the same probabilities.
    alone = []
    for fit in fit_folds(fold_data, jobs, workers=1):
        pred = fit["pred"]
        assert isinstance(pred, train_module.HeadFile) and os.path.exists(pred.path)
        alone.append((pred.path, {head: pred[head] for head in pred}))
        assert not any(os.path.exists(path) for path, _ in alone[:-1])
    assert list((tmp_path / "scratch").glob("mersemi-fits-*")) == []
    for (_, probs), (_, single) in zip(seen, alone, strict=True):
        assert list(probs) == list(single)
        for head, p in single.items():
            np.testing.assert_array_equal(probs[head], p)


def test_the_flow_hands_each_fits_freed_heap_back_once_its_blocks_are_stored(corpus, monkeypatch):
    registry, features, _ = corpus
    config = TrainConfig(folds=3, seeds=(0,), fusions=("moe",), model={"epochs": 1, "hidden": 16})
    data = train_module.training_set(registry, features, config)
    events = []
    monkeypatch.setattr(train_module, "trim_heap", lambda: events.append("release"))

    def store(frames):
        for frame in frames:
            events.append((frame["seed"].iloc[0], frame["fold"].iloc[0]))
        return None

    train_module.cross_validate(data.bundle, train_module.training_labels(registry), LABELS, config,
                                data.predict_ids, store)
    # Each fold model's blocks, then the release, before the next model's; the means last.
    marks = [e if e == "release" else e[1] for e in events]
    collapsed = [m for i, m in enumerate(marks) if i == 0 or m != marks[i - 1]]
    assert collapsed == ["0", "release", "1", "release", "2", "release", "mean"]


def test_a_training_set_built_once_trains_as_the_frames_do(corpus, tmp_path):
    registry, features, _ = corpus
    config = TrainConfig(folds=3, seeds=(0,), fusions=("moe",), model={"epochs": 3, "hidden": 16})
    built = training_set(registry, features, config)
    extra = pd.DataFrame({"clip_id": [built.predict_ids[0]], "label": ["sad"], "weight": [0.5]})
    a = train(registry, features, LABELS, config, ArtifactStore(tmp_path / "a"), "r", extra_labels=extra)
    b = train(registry, built, LABELS, config, ArtifactStore(tmp_path / "b"), "r", extra_labels=extra)
    assert a["n_train"] == b["n_train"] == 31
    pd.testing.assert_frame_equal(a["result"].oof, b["result"].oof)
    pd.testing.assert_frame_equal(a["result"].predictions, b["result"].predictions)
    outside = pd.DataFrame({"clip_id": ["not-in-it"], "label": ["sad"], "weight": [1.0]})
    with pytest.raises(ValueError, match="not in the training set built earlier"):
        train(registry, built, LABELS, config, ArtifactStore(tmp_path / "c"), "r", extra_labels=outside)


def test_fit_folds_runs_jobs_in_forked_workers_and_keeps_job_order(monkeypatch):
    jobs = [FoldJob(0, fold, "moe", np.arange(2), np.arange(1)) for fold in range(4)]
    monkeypatch.setattr(train_module, "fit_fold",
                        lambda data, job, pool_file=None: {"fold": job.fold, "pid": os.getpid()})
    monkeypatch.setattr(train_module, "_warm_torch", lambda data, job: None)
    out = list(fit_folds(None, jobs, workers=2))
    assert [o["fold"] for o in out] == [0, 1, 2, 3]
    assert os.getpid() not in {o["pid"] for o in out}
    assert {o["pid"] for o in fit_folds(None, jobs, workers=1)} == {os.getpid()}


def test_fit_folds_hands_the_last_fit_on_after_the_workers_end_and_cancels_on_an_early_stop(
        monkeypatch, tmp_path):
    def fit(data, job, pool_file=None):
        (tmp_path / f"fit-{job.fold}").touch()
        time.sleep(0.5)
        return {"fold": job.fold, "pid": os.getpid()}

    monkeypatch.setattr(train_module, "fit_fold", fit)
    monkeypatch.setattr(train_module, "_warm_torch", lambda data, job: None)
    jobs = [FoldJob(0, fold, "moe", np.arange(2), np.arange(1)) for fold in range(3)]
    me = psutil.Process()
    # Whether the worker that fitted it was still running when the fit arrived.
    seen = [(out["fold"], out["pid"] in {p.pid for p in me.children()})
            for out in fit_folds(None, jobs, workers=2)]
    assert seen == [(0, True), (1, True), (2, False)]  # the workers were gone before the last
    # A caller that stops after the first fit: the fits not begun are not run.
    for f in tmp_path.iterdir():
        f.unlink()
    many = [FoldJob(0, fold, "moe", np.arange(2), np.arange(1)) for fold in range(12)]
    fits = fit_folds(None, many, workers=2)
    assert next(fits)["fold"] == 0
    fits.close()
    # Each fit marks its start, and close() returns after the workers have ended: fewer than
    # 12 marks means the rest were cancelled. (No wall-time bound: under a loaded machine the
    # fits already handed to the workers took 2.2 s to end, where 2 s had been asserted.)
    assert len(list(tmp_path.iterdir())) < 12


SLOW_FITS = """
import os, sys, time
import numpy as np
from tasks import train as t
def slow(data, job, pool_file=None):
    open(os.path.join(sys.argv[1], str(os.getpid())), "w").close()
    time.sleep(300)
t.fit_fold = slow
t._warm_torch = lambda data, job: None
list(t.fit_folds(None, [t.FoldJob(0, i, "moe", np.arange(1), np.arange(1)) for i in range(2)], workers=2))
"""


def test_fold_workers_end_when_the_flow_process_is_killed_and_the_next_fits_remove_its_folder(
        tmp_path, monkeypatch, fake_fits):
    marks, scratch = tmp_path / "marks", tmp_path / "scratch"
    marks.mkdir()
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(train_module.tempfile, "tempdir", None)   # TMPDIR is read again
    proc = subprocess.Popen([sys.executable, "-c", SLOW_FITS, str(marks)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while len(list(marks.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = [psutil.Process(int(p.name)) for p in marks.iterdir()]
        assert len(workers) == 2 and all(w.ppid() == proc.pid for w in workers)
        (theirs,) = scratch.glob("mersemi-fits-*")
        # Fits begun here meanwhile leave the running flow's folder alone.
        assert [f["fold"] for f in fit_folds(None, _FAKE_JOBS, workers=2)] == [0, 1]
        assert theirs.is_dir()
    finally:
        proc.kill()
        proc.wait()

    def alive(w: psutil.Process) -> bool:
        try:
            return w.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + 20
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(w) for w in workers)
    # The killed flow could not remove its folder; the next fits do, and leave none of theirs.
    assert theirs.is_dir()
    assert [f["fold"] for f in fit_folds(None, _FAKE_JOBS, workers=2)] == [0, 1]
    assert not theirs.exists() and list(scratch.glob("mersemi-fits-*")) == []


def _fake_fit(data, job, pool_file=None):
    return {"fold": job.fold}


_FAKE_JOBS = [FoldJob(0, fold, "moe", np.arange(2), np.arange(1)) for fold in range(2)]


@pytest.fixture
def fake_fits(monkeypatch):
    monkeypatch.setattr(train_module, "fit_fold", _fake_fit)
    monkeypatch.setattr(train_module, "_warm_torch", lambda data, job: None)


def test_a_fits_folder_without_an_owner_file_is_left_alone(tmp_path, monkeypatch, fake_fits):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(train_module.tempfile, "tempdir", None)
    old = tmp_path / "mersemi-fits-abc123"          # an older version's: in use or not, unknown
    old.mkdir()
    list(fit_folds(None, _FAKE_JOBS, workers=2))
    assert old.is_dir()


def test_prediction_frame_rows_then_log_space_means_per_fusion_and_head():
    ids = ["a", "b"]
    rows = {"f0": [[0.9, 0.1], [0.2, 0.8]], "f1": [[0.5, 0.5], [np.nan, np.nan]],
            "x": [[0.3, 0.7], [0.6, 0.4]]}
    p = {k: np.array(v, np.float32) for k, v in rows.items()}
    parts = [({"fusion": "moe", "seed": "0", "fold": "1"}, {"final": p["f1"]}),
             ({"fusion": "moe", "seed": "0", "fold": "0"}, {"final": p["f0"]}),
             ({"fusion": "attention", "seed": "0", "fold": "0"}, {"final": p["x"]})]
    frame = prediction_frame(ids, parts, ("happy", "sad"))
    assert list(frame.columns) == ["clip_id", "head", "fusion", "seed", "fold", "p_happy", "p_sad"]
    assert frame["fold"].tolist() == ["1", "1", "0", "0", "0", "0", "mean", "mean", "mean", "mean"]
    assert frame["fusion"].tolist()[6:] == ["attention", "attention", "moe", "moe"]
    mean = frame[(frame["seed"] == "mean") & (frame["fusion"] == "moe")][["p_happy", "p_sad"]].to_numpy()
    np.testing.assert_allclose(mean, mean_log([p["f0"], p["f1"]]), rtol=1e-6)
    np.testing.assert_allclose(mean[1], [0.2, 0.8], rtol=1e-6)        # NaN-aware: one fold knew b
    assert frame["p_happy"].dtype == np.float32
    # What the flows hold: the mean rows only, the same rows with the same categories.
    pool = PoolPredictions.of(ids, parts, ("happy", "sad"))
    means = frame[frame["seed"] == "mean"].reset_index(drop=True)
    pd.testing.assert_frame_equal(pool.mean_frame(), means)
    assert [len(f) for f in pool.frames()] == [2] * 5


def test_too_few_labels_for_the_folds_is_a_clear_error(corpus, tmp_path):
    registry, features, _ = corpus
    with pytest.raises(ValueError, match="at least 20 human-labelled clips of each"):
        train(registry, features, LABELS, TrainConfig(folds=20), ArtifactStore(tmp_path), "r")


def test_pool_means_are_made_a_chunk_of_rows_at_a_time_bit_for_bit(tmp_path):
    """The running sums are kept in the spill file and worked on `chunk_rows` rows at a time: the
    means, the frames and the votes read from them are those of one pass over every row, and a
    fold worker's HeadFile is never read a whole head at once."""
    from tasks.mine import voter_probs

    rng = np.random.default_rng(3)
    n, labels, heads = 23, ("happy", "sad", "neutral"), ("final", "expert:au")
    ids = [f"c{i:02d}" for i in range(n)]
    members = [{"fusion": "moe", "seed": "0", "fold": str(f)} for f in range(3)]
    probs = [{head: rng.dirichlet(np.ones(3), n).astype(np.float32) for head in heads} for _ in members]
    # The expert lacks some clips: first in the third chunk of the first member (the counts of
    # members lacking a value start there), one clip in every member (its mean stays NaN).
    for f, rows in enumerate(([9, 10, 20], [1, 17, 20, 22], [20])):
        probs[f]["expert:au"][rows] = np.nan

    class ChunkOnly(train_module.HeadFile):
        def read(self, head, start=0, stop=None):
            stop = self.rows if stop is None else stop
            assert stop - start <= 4, f"{stop - start} rows of {head} read at once"
            return super().read(head, start, stop)

    files = []
    for f, member in enumerate(probs):
        path = tmp_path / f"fit-{f}.f32"
        path.write_bytes(b"".join(member[head].tobytes() for head in heads))
        files.append(ChunkOnly(str(path), heads, n, len(labels)))
    whole = PoolPredictions(ids, labels, members, heads, keep_folds=False, chunk_rows=10**6)
    chunked = PoolPredictions(ids, labels, members, heads, keep_folds=False, chunk_rows=4)
    in_one = list(whole.write(zip(members, probs, strict=True)))
    in_chunks = list(chunked.write(zip(members, files, strict=True)))
    assert [len(f) for f in in_chunks[:7]] == [4, 4, 4, 4, 4, 3, 4]
    assert len(in_chunks) == (3 * 2 + 2) * 6 and len(in_one) == 3 * 2 + 2
    pd.testing.assert_frame_equal(pd.concat(in_chunks, ignore_index=True),
                                  pd.concat(in_one, ignore_index=True))
    for head in heads:
        expected = mean_log([member[head] for member in probs])
        got = chunked.probs("moe", head)
        assert got.index.tolist() == ids and got.index.name == "clip_id"
        assert np.array_equal(got.to_numpy(), expected, equal_nan=True)
    assert np.isnan(chunked.probs("moe", "expert:au").loc["c20"]).all()
    assert chunked.heads == ["moe/expert:au", "moe/final"]
    assert chunked.probs("attention", "final").empty
    # A vote reads the same probabilities from the pool as from the frame of its means.
    from_pool = voter_probs(chunked, ["moe/final", "moe/expert:au", "teacher"], labels)
    from_frame = voter_probs(chunked.mean_frame(), ["moe/final", "moe/expert:au", "teacher"], labels)
    assert set(from_pool) == {"moe/final", "moe/expert:au"}
    for voter, frame in from_frame.items():
        pd.testing.assert_frame_equal(from_pool[voter], frame)


def test_the_pool_keeps_no_head_of_the_whole_pool_in_memory():
    """What a PoolPredictions holds while fold models are added does not grow with the pool:
    the sums are in its spill file."""
    import tracemalloc

    labels = ("happy", "sad", "neutral")
    members = [{"fusion": "moe", "seed": "0", "fold": str(f)} for f in range(2)]

    def held(n: int) -> int:
        pool = PoolPredictions([f"c{i:07d}" for i in range(n)], labels, members, ["final"],
                               keep_folds=False, chunk_rows=1024)
        p = np.full((n, 3), 1 / 3, np.float32)
        tracemalloc.start()
        for _ in pool.write([(keys, {"final": p}) for keys in members]):
            pass
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return peak

    # 200,000 clips' sums in memory are 2.4 MB, and their mean as much again; a chunk's are 12 KB.
    # The least of three: tracemalloc also counts what other threads of a test worker allocate
    # meanwhile, and the first call pays one-off imports and caches (in the suite: +250 KB once).
    assert min(held(200_000) for _ in range(3)) - min(held(20_000) for _ in range(3)) < 200_000
