"""The order in which clips are put to a teacher, so that a small budget buys the most.

Without predictions the order is `hash` (sha256 of the clip id): stable from run to run and
spread over the whole pool, not the first names alphabetically. With a predictions frame
(`clip_id`, `p_<label>` per label, optionally `model` for several models) the clips where an
answer matters most come first:
- margin: smallest gap between the two most probable labels (mean over models);
- entropy: most uncertain mean distribution;
- disagreement: models predicting the most distinct labels (ties: smallest margin);
- rare_label: predicted label rarest among the labelled clips (ties: smallest margin);
- auto: disagreement with several models, margin with one, hash with none.
Clips without a prediction follow, in hash order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

ORDERS = ("auto", "hash", "margin", "entropy", "disagreement", "rare_label")


def hash_rank(clip_ids: Sequence[str]) -> pd.Series:
    return pd.Series([hashlib.sha256(c.encode()).hexdigest() for c in clip_ids], index=list(clip_ids))


def hash_order(clip_ids: Sequence[str]) -> Sequence[str]:
    """`clip_ids` sorted by the sha256 of each id, as `hash_rank`'s hex digests sort: the digests
    as 32-byte strings in one numpy array (a Series of 100,000 hex strings, sorted, held
    ~45 MB at once; this ~3 MB). An array of ids (numpy, pandas, Arrow) comes back as one of
    its kind, taken in that order (not a Python string per clip); a list as a list."""
    digests = np.empty(len(clip_ids), dtype="S32")
    for i, c in enumerate(clip_ids):
        digests[i] = hashlib.sha256(c.encode()).digest()
    order = np.argsort(digests, kind="stable")
    if isinstance(clip_ids, np.ndarray | pd.api.extensions.ExtensionArray):
        return clip_ids[order]
    return [clip_ids[i] for i in order]


def uncertainty(predictions: pd.DataFrame, labels: tuple[str, ...]) -> pd.DataFrame:
    """Per clip: margin, entropy, distinct predicted labels across models, and mean arg-max."""
    columns = [f"p_{x}" for x in labels]
    frame = predictions.copy()
    if "model" not in frame.columns:
        frame["model"] = "model"
    frame["top"] = np.asarray(labels)[frame[columns].to_numpy().argmax(axis=1)]
    mean = frame.groupby("clip_id")[columns].mean()
    probs = mean.to_numpy()
    ordered = np.sort(probs, axis=1)
    p = probs / np.clip(probs.sum(axis=1, keepdims=True), 1e-12, None)
    return pd.DataFrame({
        "margin": ordered[:, -1] - ordered[:, -2],
        "entropy": -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=1),
        "distinct": frame.groupby("clip_id")["top"].nunique().reindex(mean.index).to_numpy(),
        "predicted": np.asarray(labels)[probs.argmax(axis=1)],
    }, index=mean.index)


def priority_order(clip_ids: Sequence[str], predictions: pd.DataFrame | None = None,
                   labels: tuple[str, ...] = (), order: str = "auto",
                   label_counts: Mapping[str, int] | None = None) -> Sequence[str]:
    """`clip_ids` sorted by how much their answer is worth, most first (in hash order, an
    array of ids stays one: `hash_order`)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    has_predictions = predictions is not None and len(predictions) > 0
    if order == "auto":
        several = has_predictions and "model" in predictions.columns and predictions["model"].nunique() > 1
        order = "disagreement" if several else "margin" if has_predictions else "hash"
    if order == "hash" or not has_predictions:
        return hash_order(clip_ids)
    rank = hash_rank(clip_ids)
    stats = uncertainty(predictions[predictions["clip_id"].isin(rank.index)], labels)
    if order == "margin":
        keys, ascending = ["margin"], [True]
    elif order == "entropy":
        keys, ascending = ["entropy"], [False]
    elif order == "disagreement":
        keys, ascending = ["distinct", "margin"], [False, True]
    else:                                                   # rare_label
        counts = dict(label_counts or stats["predicted"].value_counts().to_dict())
        stats["frequency"] = stats["predicted"].map(lambda x: counts.get(x, 0))
        keys, ascending = ["frequency", "margin"], [True, True]
    stats["hash"] = rank.reindex(stats.index)
    first = stats.sort_values([*keys, "hash"], ascending=[*ascending, True]).index.tolist()
    rest = rank.drop(first).sort_values().index.tolist()
    return first + rest
