"""Per-modality linear probes: are the extracted features informative?

For each extractor's newest feature set in a workspace: StandardScaler + logistic regression
fit on the labelled clips (split `train`), scored on a hidden test split given as a CSV
(name, discrete; e.g. the composite's answers/test_labels.csv, scoring only). Test clips
whose features are missing get the training set's majority label, so every test clip counts.
Chance levels printed beside: the majority label, and stratified guessing (sum of p^2).

    python bench/probes.py --workspace /tmp/ws-c0 --truth /tmp/c0/answers/test_labels.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from storage.feature_cache import vectors
from storage.records import latest_feature_sets, resolve_dataset
from storage.workspace import Workspace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--truth", type=Path, required=True, help="CSV name,discrete of the test clips")
    ap.add_argument("--dataset")
    args = ap.parse_args()
    ws = Workspace(args.workspace)
    state = resolve_dataset(ws.catalog, args.dataset)
    registry = pd.read_parquet(ws.artifacts.path_of(state.registry_artifact_id))
    truth = pd.read_csv(args.truth).merge(registry[["name", "clip_id"]], on="name")
    train = registry[(registry["split"] == "train") & registry["label"].notna()]
    majority = train["label"].value_counts().idxmax()
    prior = train["label"].value_counts(normalize=True)
    test_prior = truth["discrete"].value_counts(normalize=True)
    chance_major = f1_score(truth["discrete"], [majority] * len(truth), average="weighted")
    chance_strat = float((test_prior * prior.reindex(test_prior.index).fillna(0)).sum())
    print(f"train {len(train)} labelled clips, test {len(truth)} clips; chance: majority "
          f"weighted F1 {chance_major:.3f}, stratified guessing ~{chance_strat:.3f}\n")
    print("| extractor | dim | train ok | test ok | weighted F1 | accuracy |")
    print("|---|---|---|---|---|---|")
    for fs in latest_feature_sets(ws.catalog, state.dataset):
        frame = pd.read_parquet(ws.artifacts.root / fs["path"])
        ids, X, ok = vectors(frame)
        index = {c: i for i, c in enumerate(ids)}
        tr = [index[c] for c in train["clip_id"] if c in index and ok[index[c]]]
        y_tr = train.set_index("clip_id").loc[[ids[i] for i in tr], "label"].to_numpy()
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
        model.fit(X[tr], y_tr)
        pred = np.array([majority] * len(truth), dtype=object)
        te_ok = [(k, index[c]) for k, c in enumerate(truth["clip_id"]) if c in index and ok[index[c]]]
        if te_ok:
            rows, idx = zip(*te_ok, strict=True)
            pred[list(rows)] = model.predict(X[list(idx)])
        f1 = f1_score(truth["discrete"], pred, average="weighted")
        acc = accuracy_score(truth["discrete"], pred)
        print(f"| {fs['extractor']} | {fs['dim']} | {len(tr)}/{len(train)} | {len(te_ok)}/{len(truth)} | "
              f"{f1:.3f} | {acc:.3f} |")


if __name__ == "__main__":
    main()
