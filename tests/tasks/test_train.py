"""The train and predict stages as plain functions, on generated feature frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from storage.artifacts import ArtifactStore
from storage.feature_cache import SCHEMA
from tasks.predict import fold_of, load_models, majority_label, predict
from tasks.train import TrainConfig, build_bundle, choose_experts, mean_log, train, training_labels

LABELS = ("neutral", "happy", "sad")


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


def test_training_labels_add_extra_without_overriding_humans(corpus):
    registry, _, _ = corpus
    extra = pd.DataFrame({"clip_id": ["c000", "c031"], "label": ["sad", "happy"], "weight": [0.5, 0.7]})
    labels = training_labels(registry, extra).set_index("clip_id")
    assert len(labels) == 31
    assert labels.loc["c000", "label"] == registry.loc[0, "label"] and labels.loc["c000", "weight"] == 1.0
    assert labels.loc["c031", ["label", "weight"]].tolist() == ["happy", 0.7]


def test_mean_log_averages_in_log_space_and_ignores_nan():
    a = np.array([[0.9, 0.1], [np.nan, np.nan]])
    b = np.array([[0.5, 0.5], [0.2, 0.8]])
    out = mean_log([a, b])
    expected = np.sqrt([0.45, 0.05])
    assert np.allclose(out[0], expected / expected.sum()) and np.allclose(out[1], [0.2, 0.8])


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
    p = predictions[predictions["seed"] != "mean"]
    assert set(p["fold"]) == {"0", "1", "2"} and set(p["seed"]) == {"0", "1"}


def test_too_few_labels_for_the_folds_is_a_clear_error(corpus, tmp_path):
    registry, features, _ = corpus
    with pytest.raises(ValueError, match="at least 20 labelled clips of each"):
        train(registry, features, LABELS, TrainConfig(folds=20), ArtifactStore(tmp_path), "r")
