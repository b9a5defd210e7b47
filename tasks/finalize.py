"""Stage: finalize. Second-stage models -> ensemble -> re-ranked final labels -> submission.

Input: the second stage's cross-validated predictions (tasks/train.py trained on the human
labels plus every accepted pseudo-label), the teacher's votes, and the re-ranking rules kept on
validation (tasks/rerank.py).
Output: per candidate clip the ensemble's probabilities, the model's label, the final label
and the rules that changed it (`final.parquet`), and the MER2025 submission (`name,discrete`
for every candidate clip; a clip nothing could predict gets the majority label and is named).

The ensemble votes over the final models' heads (`members`, e.g. `moe/final` and
`attention/final`, each already averaged over its seeds and folds):
- `soft`: the members' probabilities averaged;
- `hard`: majority vote of the members' labels; the scores are (votes + soft mean) / (members + 1),
  so a tie goes to the label the members are surer of.
The same ensemble of the out-of-fold predictions scores the human-labelled clips: that is the
validation F1 the re-ranking rules are chosen on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from storage.artifacts import ArtifactRef, ArtifactStore
from tasks.mine import pool_heads, pool_probs
from tasks.predict import submission_frame
from tasks.train import PoolPredictions

ENSEMBLE_METHODS = ("soft", "hard")


def seed_mean(oof: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """Out-of-fold rows averaged over seeds: one row per clip, fusion and head (seed 'mean')."""
    cols = [f"p_{lab}" for lab in labels]
    mean = oof.groupby(["clip_id", "fusion", "head"], sort=True)[cols].mean().reset_index()
    mean["seed"] = "mean"
    return mean


def ensemble_scores(frame: pd.DataFrame | PoolPredictions, members: Sequence[str], labels: Sequence[str],
                    method: str = "soft") -> pd.DataFrame:
    """clip_id, p_<label> of the ensemble of `members` ("<fusion>/<head>") over the seed-averaged
    rows of `frame` (the pool's predictions, read a member's head at a time: `PoolPredictions`;
    or a frame of 'mean' rows: predictions', or `seed_mean(oof)`). A clip a member cannot score
    (its features are missing) is scored by the others."""
    if method not in ENSEMBLE_METHODS:
        raise ValueError(f"unknown ensemble method {method!r}; choose {' or '.join(ENSEMBLE_METHODS)}")
    cols = [f"p_{lab}" for lab in labels]
    stacks = []
    for member in members:
        rows = pool_probs(frame, member, labels)
        if rows.empty:
            raise ValueError(f"ensemble member {member!r} is not among the heads "
                             f"({', '.join(pool_heads(frame))})")
        stacks.append(rows)
    ids = sorted(set().union(*(s.index for s in stacks)))
    p = np.stack([s.reindex(ids).to_numpy(np.float64) for s in stacks])       # (M, N, L)
    known = ~np.isnan(p).any(axis=2)                                          # (M, N)
    soft = np.nansum(p, axis=0) / known.sum(axis=0).clip(1)[:, None]
    if method == "hard":
        votes = np.zeros_like(soft)
        top = np.nan_to_num(p, nan=-1.0).argmax(axis=2)                       # (M, N)
        for m in range(len(stacks)):
            votes[np.flatnonzero(known[m]), top[m, known[m]]] += 1
        soft = (votes + soft) / (known.sum(axis=0)[:, None] + 1)
    out = pd.DataFrame(soft, columns=cols)
    out.insert(0, "clip_id", ids)
    return out[known.any(axis=0)].reset_index(drop=True)


def final_frame(registry: pd.DataFrame, scores: pd.DataFrame, reranked: pd.DataFrame,
                labels: Sequence[str]) -> pd.DataFrame:
    """clip_id, name, label, confidence, model_label, rules, p_<label>: one row per scored candidate."""
    names = registry.set_index("clip_id")["name"]
    out = reranked.merge(scores, on="clip_id", how="left")
    out.insert(1, "name", names.loc[out["clip_id"]].to_numpy())
    return out[["clip_id", "name", "label", "confidence", "model_label", "rules",
                *[f"p_{lab}" for lab in labels]]]


def submission(registry: pd.DataFrame, final: pd.DataFrame, majority: str
               ) -> tuple[pd.DataFrame, list[str]]:
    """The MER2025 submission for every (not removed) candidate clip, and the fallback clips' names."""
    candidates = registry[(registry["split"] == "candidate") & (registry["status"] != "removed")]
    decided = dict(zip(final["clip_id"], final["label"], strict=True))
    frame, fallback = submission_frame(candidates, decided, majority)
    names = candidates.set_index("clip_id")["name"]
    return frame, names.loc[fallback].tolist()


def save_final(final: pd.DataFrame, changes: pd.DataFrame, flags: pd.DataFrame, submission_: pd.DataFrame,
               store: ArtifactStore, run_id: str) -> dict[str, ArtifactRef]:
    """Store the final labels, the rule changes, the label flags (Parquet) and the submission (CSV)."""
    return {"final": store.save(final, run_id, "finalize", "final"),
            "changes": store.save(changes, run_id, "finalize", "rule_changes"),
            "flags": store.save(flags, run_id, "finalize", "label_flags"),
            "submission": store.save_bytes(submission_.to_csv(index=False).encode(), run_id, "finalize",
                                           "submission", suffix=".csv")}


def ensemble(predictions: pd.DataFrame | PoolPredictions, oof: pd.DataFrame, human_ids: Sequence[str],
             members: Sequence[str], labels: Sequence[str], method: str = "soft"
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(candidate scores, validation scores): the ensemble over the second stage's candidate
    predictions, and over its out-of-fold predictions of the human-labelled clips."""
    scores = ensemble_scores(predictions, members, labels, method)
    oof = oof[oof["clip_id"].isin(set(human_ids))]
    return scores, ensemble_scores(seed_mean(oof, labels), members, labels, method)


ensemble_task = task(ensemble, name="ensemble", cache_policy=NO_CACHE)
