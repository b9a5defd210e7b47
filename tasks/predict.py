"""Stage: predict. Trained fold models + current features -> probabilities and a submission.

Input: the model files of a training run, the clip registry and the newest feature sets.
Output: `<run>/predict/predictions.parquet` (clip_id, fusion, head, seed, fold, p_<label>,
with the fold-averaged 'mean' rows) and `<run>/predict/submission.csv` in the MER2025 format
(`name,discrete`), with a prediction for every candidate clip. A candidate that cannot be
predicted (unusable media, or no features at all) gets the training labels' majority label,
and the summary counts and names those clips.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from models.baseline import FusionClassifier
from storage.artifacts import ArtifactRef, ArtifactStore
from tasks.memory import release_memory
from tasks.train import (
    USABLE,
    HeadFile,
    PoolPredictions,
    build_bundle,
    choose_experts,
    collect_predictions,
    hand_on,
    member_order,
    predict_to_file,
    scratch_folder,
)


def load_models(store: ArtifactStore, model_paths: list[str]) -> list[tuple[str, FusionClassifier]]:
    """(file name, model) for each model file of a training run."""
    return [(path, FusionClassifier.from_bytes(store.path(path).read_bytes())) for path in model_paths]


def fold_of(path: str) -> tuple[str, str, str]:
    """(fusion, seed, fold) from `.../model-<fusion>-s<seed>-f<fold>.pt`."""
    fusion, seed, fold = path.rsplit("/", 1)[1][len("model-") : -len(".pt")].rsplit("-", 2)
    return fusion, seed[1:], fold[1:]


def predict(
    registry: pd.DataFrame,
    features: dict[str, pd.DataFrame],
    models: list[tuple[str, FusionClassifier]],
    label_set: tuple[str, ...],
    majority: str,
    head: str = "final",
    fusion: str | None = None,
    store_predictions: Callable[[Iterator[pd.DataFrame]], ArtifactRef] | None = None,
) -> tuple[PoolPredictions, pd.DataFrame, dict]:
    """(predictions, submission frame name/discrete, summary) for every candidate clip.
    `features` may be read on demand (storage.records.FeatureFrames): each frame is let go once
    the models' bundle is built. `store_predictions` (`ArtifactStore.save_frames` of the run's
    predictions): each model's rows are written as it predicts, and only their running means
    are held (`predictions.stored` is the artifact); None: every model's rows are kept."""
    candidate = (registry["split"] == "candidate") & (registry["status"] != "removed")
    # Arrow strings: no Python string per clip, and no copy of the registry's rows held while
    # the bundle is built (the candidates' frame is made once the predictions are in).
    ids = registry.loc[candidate & registry["status"].isin(USABLE), "clip_id"].astype("str").array
    # By seed, then fold: the order each head's means take them in.
    members = sorted(((dict(zip(("fusion", "seed", "fold"), fold_of(path), strict=True)), model)
                      for path, model in models), key=lambda m: member_order(m[0]["seed"], m[0]["fold"]))
    keys = [key for key, _ in members]
    heads = {h for _, m in members for h in FusionClassifier.output_heads(m.fusion, m.expert_names_)}
    predictions = PoolPredictions(ids, label_set, keys, heads, keep_folds=store_predictions is None)
    bundles: dict[tuple[str, ...], object] = {}

    def parts() -> Iterator[tuple[dict, HeadFile]]:
        with scratch_folder() as scratch:
            for i, (key, model) in enumerate(members):
                # Fold models share their experts: one bundle of the candidates for all of them.
                names = tuple(model.expert_names_)
                if names not in bundles:
                    bundles[names] = build_bundle(ids, features, choose_experts(list(features), list(names)))
                # Its probabilities go to a file a chunk of rows at a time and are read back a
                # chunk of a head at a time (unless every block is kept): never all in memory.
                pred = predict_to_file(model, bundles[names], np.arange(len(ids)),
                                       os.path.join(scratch, f"model-{i}.f32"))
                yield from hand_on((key, pred), pred)
                # Its blocks are in the means and the artifact: the heap their reading and
                # encoding freed goes back before the next model predicts (no workers share it).
                release_memory()

    collect_predictions(predictions, parts(), store_predictions)
    bundles.clear()
    candidates = registry.loc[candidate, ["clip_id", "name"]]
    fusion = fusion or members[0][1].fusion
    chosen = predictions.probs(fusion, head)
    decided = {
        cid: label_set[int(np.argmax(row))]
        for cid, row in zip(chosen.index, chosen.to_numpy(), strict=True)
    }
    submission, fallback = submission_frame(candidates, decided, majority)
    names = candidates.set_index("clip_id")["name"]
    summary = {
        "candidates": len(candidates),
        "predicted": len(decided),
        "fallback": len(fallback),
        "fallback_clips": names.loc[fallback].tolist()[:20],
        "fallback_label": majority,
        "head": f"{fusion}/{head}",
        "models": len(members),
        "label_counts": submission["discrete"].value_counts().to_dict(),
    }
    return predictions, submission, summary


def submission_frame(candidates: pd.DataFrame, decided: dict[str, str], majority: str
                     ) -> tuple[pd.DataFrame, list[str]]:
    """(MER2025 submission: name, discrete for every candidate clip sorted by name; the clip_ids
    that got the `majority` fallback because nothing predicted them)."""
    names = candidates.set_index("clip_id")["name"]
    fallback = [cid for cid in candidates["clip_id"] if cid not in decided]
    submission = pd.DataFrame({"name": names.loc[candidates["clip_id"]].tolist(),
                               "discrete": [decided.get(c, majority) for c in candidates["clip_id"]]})
    return submission.sort_values("name").reset_index(drop=True), fallback


def majority_label(registry: pd.DataFrame) -> str:
    """The most frequent human label: the fallback for candidates that cannot be predicted."""
    labelled = registry.loc[(registry["split"] == "train") & registry["label"].notna(), "label"]
    return str(labelled.value_counts().idxmax())


def save_predictions(
    predictions: PoolPredictions, submission: pd.DataFrame, store: ArtifactStore, run_id: str
) -> list:
    """Store the probabilities (Parquet, a block of rows at a time; unless `predict` stored them
    as it went) and the MER2025 submission file (name,discrete CSV)."""
    return [
        predictions.save(store, run_id, "predict"),
        store.save_bytes(
            submission.to_csv(index=False).encode(), run_id, "predict", "submission", suffix=".csv"
        ),
    ]


predict_task = task(predict, name="predict", cache_policy=NO_CACHE)
