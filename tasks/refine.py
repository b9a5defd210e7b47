"""Stage: label refinement (ECMF's multi-source labelling). Human labels are checked, never rewritten.

Input: out-of-fold predictions of the human-labelled clips (every head of a cross-validated
model: the fusion heads and each modality expert) and, where it answered them, the teacher.
Output: one row per human-labelled clip that every other source contradicts (at least
`min_sources` sources voted and none said the human label): its label, what each source said,
the label most sources said instead, and the action (`flagged`, or `down-weighted` with the
weight the second stage trains it with). The human label itself is never changed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.finalize import seed_mean

FLAG_COLUMNS = ["clip_id", "label", "alternative", "n_sources", "agree", "sources", "action", "weight"]


def source_votes(oof: pd.DataFrame, labels: Sequence[str], teacher: pd.DataFrame | None = None
                 ) -> pd.DataFrame:
    """clip_id, source, vote, confidence: each head's seed-averaged out-of-fold label per clip
    (source `<fusion>/<head>`), and the teacher's (`teacher`) where it answered."""
    cols = [f"p_{lab}" for lab in labels]
    parts = []
    mean = seed_mean(oof, labels).dropna(subset=cols)
    if len(mean):
        p = mean[cols].to_numpy()
        source = mean["fusion"].astype(str) + "/" + mean["head"].astype(str)
        parts.append(pd.DataFrame({"clip_id": mean["clip_id"].to_numpy(), "source": source.to_numpy(),
                                   "vote": [labels[i] for i in p.argmax(axis=1)],
                                   "confidence": p.max(axis=1)}))
    if teacher is not None and len(teacher):
        parts.append(pd.DataFrame({"clip_id": teacher["clip_id"].to_numpy(), "source": "teacher",
                                   "vote": teacher["teacher:label"].to_numpy(),
                                   "confidence": teacher["teacher:confidence"].to_numpy()}))
    if not parts:
        return pd.DataFrame(columns=["clip_id", "source", "vote", "confidence"])
    return pd.concat(parts, ignore_index=True)


def refine_labels(human: pd.DataFrame, votes: pd.DataFrame, min_sources: int = 3,
                  down_weight: float | None = None) -> pd.DataFrame:
    """The human-labelled clips (`human`: clip_id, label) that every source voting on them
    contradicts, with at least `min_sources` votes. With `down_weight`, their training weight
    becomes that factor (action `down-weighted`); otherwise they are only flagged."""
    if down_weight is not None and not 0 <= down_weight <= 1:
        raise ValueError(f"down_weight must be in [0, 1], got {down_weight}")
    truth = human.set_index("clip_id")["label"]
    rows = []
    for cid, group in votes[votes["clip_id"].isin(truth.index)].groupby("clip_id", sort=True):
        label = truth.at[cid]
        agree = int((group["vote"] == label).sum())
        if len(group) < min_sources or agree:
            continue
        alternative = Counter(group["vote"]).most_common(1)[0][0]
        sources = {s: {"label": v, "confidence": round(float(c), 4)}
                   for s, v, c in zip(group["source"], group["vote"], group["confidence"], strict=True)}
        rows.append({"clip_id": cid, "label": label, "alternative": alternative, "n_sources": len(group),
                     "agree": agree, "sources": json.dumps(sources, sort_keys=True),
                     "action": "flagged" if down_weight is None else "down-weighted",
                     "weight": 1.0 if down_weight is None else float(down_weight)})
    return pd.DataFrame(rows, columns=FLAG_COLUMNS)


def label_weights(flags: pd.DataFrame) -> dict[str, float]:
    """clip_id -> training weight of the down-weighted human labels (flagged ones keep 1)."""
    hit = flags[flags["action"] == "down-weighted"]
    return dict(zip(hit["clip_id"], hit["weight"].astype(float), strict=True))


def flag_rate(flags: pd.DataFrame, human: pd.DataFrame) -> dict[str, float]:
    """Share of each label's human-labelled clips that were flagged."""
    n = human["label"].value_counts()
    f = flags["label"].value_counts()
    return {lab: float(np.round(f.get(lab, 0) / n[lab], 4)) for lab in n.index}


MODES = ("off", "flag", "down-weight")


def refine(oof: pd.DataFrame, human: pd.DataFrame, labels: Sequence[str], teacher: pd.DataFrame | None,
           min_sources: int = 3, mode: str = "flag", down_weight: float = 0.5) -> pd.DataFrame:
    """The whole stage: every head's and the teacher's votes on the human-labelled clips, then
    the flags (see `refine_labels`); `mode` off: none, flag: report only, down-weight: also
    train them at `down_weight`."""
    if mode not in MODES:
        raise ValueError(f"unknown refinement mode {mode!r}; choose {', '.join(MODES)}")
    if mode == "off":
        return pd.DataFrame(columns=FLAG_COLUMNS)
    return refine_labels(human, source_votes(oof, labels, teacher), min_sources,
                         down_weight if mode == "down-weight" else None)


refine_task = task(refine, name="refine-labels", cache_policy=NO_CACHE)
