"""Benchmark: the supervised baseline (B) and the oracle (O) on the composite's hidden test split.

Needs a workspace where the composite corpus is ingested and its features extracted
(`mersemi ingest`, `mersemi features`). B trains on the 300 labelled clips; O on those plus the
true labels of the unlabelled pool (answers/candidates_truth.csv without the test clips), the
ceiling pseudo-labelling aims at. Both are scored on answers/test_labels.csv, per head.

    python bench/baseline_composite.py --workspace /tmp/ws-c0 --corpus /tmp/c0 --seeds 0,1,2 --oracle-seeds 0
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from models.metrics import evaluate
from storage.artifacts import ArtifactStore
from storage.records import feature_frames, resolve_dataset
from storage.workspace import Workspace
from tasks.finalize import ensemble_scores
from tasks.train import TrainConfig, train


def score(result, truth: pd.DataFrame, labels: tuple[str, ...], fallback: str) -> dict[str, dict]:
    cols = [f"p_{lab}" for lab in labels]
    mean = result.predictions[result.predictions["seed"] == "mean"]
    out = {}
    for (fusion, head), group in mean.groupby(["fusion", "head"], sort=True):
        g = group.set_index("clip_id").reindex(truth["clip_id"])
        known = g[cols].notna().all(axis=1).to_numpy()
        idx = np.nan_to_num(g[cols].to_numpy(), nan=0.0).argmax(1)
        pred = [labels[i] if k else fallback for i, k in zip(idx, known, strict=True)]
        out[f"{fusion}/{head}"] = evaluate(truth["discrete"].tolist(), pred, labels) | {
            "coverage": float(known.mean()), "cv": result.metrics[fusion][head]["weighted_f1"]}
    # The final stage's default predictor: the soft ensemble of the two fusion heads.
    members = [m for m in ("moe/final", "attention/final") if m in out]
    if len(members) == 2:
        scores = ensemble_scores(result.predictions, members, labels, "soft").set_index("clip_id")
        p = scores.reindex(truth["clip_id"])[cols]
        pred = [labels[i] if k else fallback for i, k in
                zip(np.nan_to_num(p.to_numpy(), nan=0.0).argmax(1), p.notna().all(axis=1), strict=True)]
        out["ensemble " + "+".join(members)] = evaluate(truth["discrete"].tolist(), pred, labels) | {
            "coverage": float(p.notna().all(axis=1).mean()), "cv": float("nan")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--corpus", type=Path, required=True, help="the composite build (for answers/)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--oracle-seeds", default="0")
    ap.add_argument("--tmp", type=Path, default=Path("/tmp/mersemi-baseline-bench"))
    args = ap.parse_args()
    ws = Workspace(args.workspace)
    state = resolve_dataset(ws.catalog, None)
    registry = ws.artifacts.load(f"{state.registry_artifact_id}.parquet")
    features, _ = feature_frames(ws.catalog, ws.artifacts, state.dataset)
    ids = registry.set_index("name")["clip_id"]
    truth = pd.read_csv(args.corpus / "answers" / "test_labels.csv")
    truth["clip_id"] = ids.loc[truth["name"]].to_numpy()
    pool = pd.read_csv(args.corpus / "answers" / "candidates_truth.csv")
    pool = pool[~pool["name"].isin(truth["name"])]
    oracle = pd.DataFrame({"clip_id": ids.loc[pool["name"]].to_numpy(), "label": pool["discrete"],
                           "weight": 1.0})
    runs = {"B": (tuple(int(s) for s in args.seeds.split(",")), None),
            "O": (tuple(int(s) for s in args.oracle_seeds.split(",")), oracle)}
    print(f"features: {', '.join(f'{k} ({len(v)} rows)' for k, v in sorted(features.items()))}")
    rows, timing = {}, {}
    for name, (seeds, extra) in runs.items():
        t0 = time.perf_counter()
        out = train(registry, features, state.labels, TrainConfig(seeds=seeds),
                    ArtifactStore(args.tmp / name), f"bench-{name}", extra_labels=extra)
        timing[name] = (time.perf_counter() - t0, out["n_train"], len(seeds))
        rows[name] = score(out["result"], truth, state.labels, "neutral")
    for name, (secs, n, k) in timing.items():
        print(f"{name}: {n} training clips, {k} seed(s) x 5 folds x 2 fusions, {secs:.0f} s")
    print("\n| head | B test wF1 | B acc | B CV wF1 | O test wF1 | O acc | coverage |")
    print("|---|---|---|---|---|---|---|")
    for head in rows["B"]:
        b, o = rows["B"][head], rows["O"].get(head, {})
        print(f"| {head} | {b['weighted_f1']:.3f} | {b['accuracy']:.3f} | {b['cv']:.3f} | "
              f"{o.get('weighted_f1', float('nan')):.3f} | {o.get('accuracy', float('nan')):.3f} | "
              f"{b['coverage']:.2f} |")


if __name__ == "__main__":
    main()
