"""Benchmark: how many pseudo-labels an epoch needs (`pseudo_ratio`), chosen on the validation
folds of the human labels.

Trains on a workspace's human labels plus the pseudo-labels its newest completed mining run
accepted (or `--mine-run`), once per `--ratios` value ('all': every pseudo-label every epoch),
with the same folds, seeds and epochs, into a temporary artifact store (the workspace is only
read). Prints per ratio the training's wall time, the rows an epoch trains on, the fold models'
mean best epoch, and the out-of-fold weighted F1 on the human labels of each fusion's final
head and of their soft ensemble: the selection criterion. With `--corpus` (a composite build),
the test clips' weighted F1 against answers/test_labels.csv is printed beside it: scoring only.

    python bench/pseudo_ratio.py --workspace /tmp/ws-c0 --corpus /tmp/c0 --ratios all,0.5,1,2,4 \
        --folds 5 --seeds 0
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from models.metrics import evaluate
from storage.artifacts import ArtifactStore
from storage.feature_cache import TRAINING_COLUMNS
from storage.records import accepted_pseudo_labels, feature_frames, latest_stage_run, resolve_dataset
from storage.workspace import Workspace
from tasks.finalize import ensemble_scores, seed_mean
from tasks.mine import pseudo_labels
from tasks.train import TrainConfig, train, training_set

# The final predictor's ensemble (tasks/finalize): mean probability of both fusions' final heads.
MEMBERS = ("moe/final", "attention/final")


def ensemble_labels(frame: pd.DataFrame, ids: list[str], labels: tuple[str, ...]) -> list[str]:
    """The soft ensemble's label for each clip of `ids`, over the seed-averaged rows of `frame`."""
    scores = ensemble_scores(frame, MEMBERS, labels).set_index("clip_id").loc[ids]
    return [labels[i] for i in scores.to_numpy().argmax(1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--corpus", type=Path, help="composite build: score the test clips (scoring only)")
    ap.add_argument("--mine-run", help="mining run whose accepted clips join training [newest]")
    ap.add_argument("--ratios", default="all,1,2,4")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()

    ws = Workspace(args.workspace)
    state = resolve_dataset(ws.catalog, None)
    labels = state.labels
    mine_run = args.mine_run or latest_stage_run(ws.catalog, "mine", state.dataset)[0]
    pseudo = pseudo_labels(accepted_pseudo_labels(ws.catalog, mine_run))
    registry = ws.artifacts.load(f"{state.registry_artifact_id}.parquet")
    features, _ = feature_frames(ws.catalog, ws.artifacts, state.dataset, columns=TRAINING_COLUMNS)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    base = TrainConfig(folds=args.folds, seeds=seeds, workers=args.workers, model={"epochs": args.epochs})
    data = training_set(registry, features, base)
    del features
    human = registry[(registry["split"] == "train") & registry["label"].notna()]
    human = human[human["clip_id"].isin(data.bundle.clip_ids)]
    human_ids, truth = human["clip_id"].astype(str).tolist(), human["label"].astype(str).tolist()
    test = None
    if args.corpus:
        names = pd.read_csv(args.corpus / "answers" / "test_labels.csv").set_index("name")["discrete"]
        reg = registry.set_index("name")
        test = [(reg.loc[n, "clip_id"], lab) for n, lab in names.items() if n in reg.index]
    n_train_human = math.ceil(len(human_ids) * (args.folds - 1) / args.folds)
    print(f"workspace {args.workspace}: {len(human_ids)} human labels, {len(pseudo)} pseudo-labels of "
          f"{mine_run}; {args.folds} folds, seeds {list(seeds)}, at most {args.epochs} epochs, "
          f"{args.workers} worker(s)\n")
    print("| pseudo_ratio | rows per epoch | train s | mean best epoch | OOF wF1 moe | OOF wF1 attention "
          "| OOF wF1 ensemble |" + (" test wF1 ensemble |" if test else ""))
    print("|---|---|---|---|---|---|---|" + ("---|" if test else ""))
    for text in args.ratios.split(","):
        ratio = None if text == "all" else float(text)
        config = TrainConfig(folds=args.folds, seeds=seeds, workers=args.workers,
                             model={"epochs": args.epochs, "pseudo_ratio": ratio})
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            out = train(registry, data, labels, config, ArtifactStore(tmp), "bench", extra_labels=pseudo)
            wall = time.perf_counter() - t0
        result = out["result"]
        drawn = len(pseudo) if ratio is None else min(len(pseudo), math.ceil(ratio * n_train_human))
        rows = n_train_human + drawn
        f1 = {f: result.metrics[f]["final"]["weighted_f1"] for f in result.metrics}
        ens_f1 = evaluate(truth, ensemble_labels(seed_mean(result.oof, labels), human_ids, labels),
                          labels)["weighted_f1"]
        best = np.mean([m["best_epoch"] for m in result.models])
        line = (f"| {text} | {rows} | {wall:.0f} | {best:.1f} | {f1.get('moe', float('nan')):.3f} | "
                f"{f1.get('attention', float('nan')):.3f} | {ens_f1:.3f} |")
        if test:
            scored = evaluate([lab for _, lab in test],
                              ensemble_labels(result.predictions, [c for c, _ in test], labels), labels)
            line += f" {scored['weighted_f1']:.3f} |"
        print(line, flush=True)


if __name__ == "__main__":
    main()
