"""Stage: train. Feature sets + labels -> cross-validated fusion models and their predictions.

Input: the clip registry, the dataset's newest feature set per extractor, and training labels
(clip_id, label, weight: the human labels of the `train` split, to which pseudo-labelling later
adds accepted clips).
Output: per fusion head, seed and fold, a model file (`<run>/train/model-<fusion>-s<seed>-f<fold>.pt`);
`oof.parquet` (out-of-fold probabilities of every labelled clip), `predictions.parquet`
(probabilities of the clips to predict: per fold and averaged, per head), and metrics.

Experts (one per input): every clip-level feature set as an MLP expert, the AU sequence as a
temporal expert (`au_seq`), and the early audio-text module (`audio_text`: frame-level audio x
token-level text). Folds are stratified; each fold trains on the rest with early stopping on
the fold's validation weighted F1; fold predictions are averaged in log space (the MER
toolkit averages fold logits).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from sklearn.model_selection import StratifiedKFold

from models.baseline import Bundle, ExpertInput, FusionClassifier
from models.metrics import evaluate
from storage.artifacts import ArtifactRef, ArtifactStore
from storage.feature_cache import vectors
from storage.ingest import USABLE


@dataclass(frozen=True)
class ExpertSpec:
    name: str
    kind: str  # vector, sequence, joint
    sources: tuple[str, ...]  # feature sets (extractor names) it reads


def default_experts(available: list[str]) -> list[ExpertSpec]:
    """An MLP per feature set, the AU temporal expert and the audio-text joint module."""
    specs = [ExpertSpec(name, "vector", (name,)) for name in sorted(available)]
    if "au" in available:
        specs.append(ExpertSpec("au_seq", "sequence", ("au",)))
    if "audio_handcrafted" in available and "text" in available:
        specs.append(ExpertSpec("audio_text", "joint", ("audio_handcrafted", "text")))
    return specs


def choose_experts(available: list[str], names: list[str] | None) -> list[ExpertSpec]:
    specs = default_experts(available)
    if not names:
        return specs
    known = {s.name: s for s in specs}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"unknown or unavailable expert(s) {', '.join(unknown)}; available: {', '.join(known)}"
        )
    return [known[n] for n in names]


def _positions(frame_ids, ids: list[str]) -> np.ndarray:
    """Row of each of `ids` in `frame_ids` (-1 where absent; a repeated id: its last row)."""
    index = pd.Index(frame_ids)
    if index.is_unique:
        return index.get_indexer(ids)
    rows = pd.Series(np.arange(len(index)), index=index)[~index.duplicated(keep="last")]
    return rows.reindex(ids).fillna(-1).to_numpy(np.int64)


def _sequences(frame: pd.DataFrame, ids: list[str]) -> tuple[list[np.ndarray | None], np.ndarray]:
    # Rows are located once, by index, not looked up clip by clip (the lookups took 7.3 s
    # for 8,000 clips, linear in the pool; bench/scale_pool.py).
    pos = _positions(frame["clip_id"], ids)
    status = frame["status"].to_numpy(object)
    sequence = frame["sequence"].to_numpy(object)
    seq_len, seq_dim = frame["seq_len"].to_numpy(), frame["seq_dim"].to_numpy()
    seqs: list[np.ndarray | None] = [None] * len(ids)
    present = np.zeros(len(ids), bool)
    for i, j in enumerate(pos):
        if j >= 0 and status[j] == "ok" and sequence[j] is not None:
            seqs[i] = np.asarray(sequence[j], np.float32).reshape(int(seq_len[j]), int(seq_dim[j]))
            present[i] = True
    return seqs, present


def _matrix(frame: pd.DataFrame, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    fids, X, ok = vectors(frame)
    pos = _positions(fids, ids)
    present = pos >= 0
    present[present] = ok[pos[present]]
    out = np.zeros((len(ids), X.shape[1]), np.float32)
    out[present] = X[pos[present]]
    return out, present


def build_bundle(ids: list[str], features: dict[str, pd.DataFrame], specs: list[ExpertSpec]) -> Bundle:
    """The inputs of clips `ids` for every expert (absent features masked, never zeros)."""
    experts = []
    for spec in specs:
        if spec.kind == "vector":
            x, present = _matrix(features[spec.sources[0]], ids)
            experts.append(ExpertInput(spec.name, "vector", present, x=x))
        elif spec.kind == "sequence":
            seqs, present = _sequences(features[spec.sources[0]], ids)
            experts.append(ExpertInput(spec.name, "sequence", present, seqs=seqs))
        else:
            audio, pa_ = _sequences(features[spec.sources[0]], ids)
            text, pt_ = _sequences(features[spec.sources[1]], ids)
            experts.append(ExpertInput(spec.name, "joint", pa_ & pt_, seqs=audio, seqs2=text))
    return Bundle(list(ids), experts)


@dataclass
class TrainConfig:
    fusions: tuple[str, ...] = ("moe", "attention")
    experts: tuple[str, ...] = ()
    folds: int = 5
    seeds: tuple[int, ...] = (0, 1, 2)
    model: dict = field(default_factory=dict)     # FusionClassifier settings (hidden, epochs, ...)

    def build(self, labels: tuple[str, ...], fusion: str, seed: int) -> FusionClassifier:
        return FusionClassifier(labels, fusion=fusion, seed=seed, **self.model)


@dataclass
class TrainResult:
    oof: pd.DataFrame  # clip_id, fusion, head, seed, p_<label>
    predictions: pd.DataFrame  # clip_id, fusion, head, seed, fold ('mean' too), p_<label>
    models: list[dict] = field(default_factory=list)  # fusion, seed, fold, bytes, val_f1, best_epoch
    metrics: dict = field(default_factory=dict)  # fusion -> head -> evaluate(...)


def _rows(ids, probs: dict[str, np.ndarray], labels, **keys) -> list[pd.DataFrame]:
    out = []
    for head, p in probs.items():
        frame = pd.DataFrame(p, columns=[f"p_{lab}" for lab in labels])
        frame.insert(0, "clip_id", ids)
        for i, (k, v) in enumerate({"head": head, **keys}.items(), start=1):
            frame.insert(i, k, v)
        out.append(frame)
    return out


def mean_log(probs: list[np.ndarray]) -> np.ndarray:
    """Average in log space (fold logits up to a per-row constant), renormalised; NaN-aware."""
    logp = np.log(np.clip(np.stack(probs), 1e-8, 1.0))
    with warnings.catch_warnings():
        # An expert head is NaN for a clip that lacks the expert in every fold: it stays NaN.
        warnings.simplefilter("ignore", RuntimeWarning)
        m = np.nanmean(logp, axis=0)
        p = np.exp(m - np.nanmax(m, axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def cross_validate(
    bundle: Bundle,
    labels_df: pd.DataFrame,
    label_set: tuple[str, ...],
    config: TrainConfig,
    predict_ids: list[str],
) -> TrainResult:
    """k-fold CV per seed and fusion: out-of-fold probabilities, fold models, predictions."""
    index = {c: i for i, c in enumerate(bundle.clip_ids)}
    train_rows = np.array([index[c] for c in labels_df["clip_id"]])
    y = np.array([label_set.index(lab) for lab in labels_df["label"]])
    weight = labels_df["weight"].to_numpy(np.float32) if "weight" in labels_df else None
    to_predict = bundle.subset([index[c] for c in predict_ids])
    oof_parts, pred_parts, models = [], [], []
    for seed in config.seeds:
        folds = StratifiedKFold(config.folds, shuffle=True, random_state=seed).split(train_rows, y)
        for fold, (tr, va) in enumerate(folds):
            b_tr, b_va = bundle.subset(train_rows[tr]), bundle.subset(train_rows[va])
            for fusion in config.fusions:
                model = config.build(label_set, fusion, seed * 1000 + fold).fit(
                    b_tr, y[tr], None if weight is None else weight[tr], val=(b_va, y[va])
                )
                oof_parts += _rows(
                    b_va.clip_ids, model.predict_proba(b_va), label_set, fusion=fusion, seed=seed, fold=fold
                )
                pred_parts += _rows(
                    to_predict.clip_ids,
                    model.predict_proba(to_predict),
                    label_set,
                    fusion=fusion,
                    seed=str(seed),
                    fold=str(fold),
                )
                models.append(
                    {
                        "fusion": fusion,
                        "seed": seed,
                        "fold": fold,
                        "bytes": model.to_bytes(),
                        "val_f1": model.val_f1_,
                        "best_epoch": model.best_epoch_,
                    }
                )
    oof = pd.concat(oof_parts, ignore_index=True)
    predictions = pd.concat(pred_parts, ignore_index=True)
    predictions = pd.concat([predictions, average_folds(predictions, label_set)], ignore_index=True)
    metrics = oof_metrics(oof, labels_df, label_set)
    return TrainResult(oof, predictions, models, metrics)


def average_folds(predictions: pd.DataFrame, label_set: tuple[str, ...]) -> pd.DataFrame:
    """One 'mean' row per clip, fusion and head: every seed's and fold's, averaged in log space."""
    cols = [f"p_{lab}" for lab in label_set]
    out = []
    for (fusion, head), group in predictions.groupby(["fusion", "head"], sort=True):
        stacked = [g.set_index("clip_id")[cols] for _, g in group.groupby(["seed", "fold"])]
        ids = stacked[0].index
        p = mean_log([s.loc[ids].to_numpy() for s in stacked])
        frame = pd.DataFrame(p, columns=cols)
        frame.insert(0, "clip_id", list(ids))
        frame.insert(1, "head", head)
        frame.insert(2, "fusion", fusion)
        frame.insert(3, "seed", "mean")
        frame.insert(4, "fold", "mean")
        out.append(frame)
    return pd.concat(out, ignore_index=True)


def oof_metrics(oof: pd.DataFrame, labels_df: pd.DataFrame, label_set: tuple[str, ...]) -> dict:
    """Cross-validated metrics per fusion and head (seed-averaged out-of-fold probabilities)."""
    cols = [f"p_{lab}" for lab in label_set]
    truth = labels_df.set_index("clip_id")["label"]
    metrics: dict = {}
    for (fusion, head), group in oof.groupby(["fusion", "head"], sort=True):
        per_seed = [g.set_index("clip_id")[cols] for _, g in group.groupby("seed")]
        ids = per_seed[0].index[per_seed[0].notna().all(axis=1).to_numpy()].tolist()
        if not ids:
            continue
        p = mean_log([s.loc[ids].to_numpy() for s in per_seed])
        pred = [label_set[i] for i in p.argmax(1)]
        metrics.setdefault(fusion, {})[head] = evaluate(truth.loc[ids].tolist(), pred, label_set) | {
            "coverage": len(ids) / len(truth)
        }
    return metrics


def save_training(result: TrainResult, store: ArtifactStore, run_id: str, stage: str = "train"
                  ) -> dict[str, ArtifactRef | list]:
    """Store fold models, out-of-fold and candidate predictions; return their references."""
    model_refs = []
    for m in result.models:
        name = f"model-{m['fusion']}-s{m['seed']}-f{m['fold']}"
        model_refs.append(store.save_bytes(m["bytes"], run_id, stage, name, suffix=".pt"))
    return {
        "models": model_refs,
        "oof": store.save(result.oof, run_id, stage, "oof"),
        "predictions": store.save(result.predictions, run_id, stage, "predictions"),
    }


def training_labels(registry: pd.DataFrame, extra: pd.DataFrame | None = None,
                    human_weights: dict[str, float] | None = None) -> pd.DataFrame:
    """clip_id, label, weight: usable labelled `train` clips (weight 1, or `human_weights[clip_id]`
    for a down-weighted human label), plus `extra` (e.g. pseudo-labels with their weights)."""
    base = registry[
        (registry["split"] == "train") & registry["label"].notna() & registry["status"].isin(USABLE)
    ]
    labels = pd.DataFrame(
        {"clip_id": base["clip_id"].astype(str), "label": base["label"].astype(str), "weight": 1.0}
    )
    if human_weights:
        labels["weight"] = [float(human_weights.get(c, 1.0)) for c in labels["clip_id"]]
    if extra is not None and len(extra):
        extra = extra[~extra["clip_id"].isin(labels["clip_id"])]
        labels = pd.concat([labels, extra[["clip_id", "label", "weight"]]], ignore_index=True)
    return labels.sort_values("clip_id").reset_index(drop=True)


def train(
    registry: pd.DataFrame,
    features: dict[str, pd.DataFrame],
    label_set: tuple[str, ...],
    config: TrainConfig,
    store: ArtifactStore,
    run_id: str,
    extra_labels: pd.DataFrame | None = None,
    stage: str = "train",
    human_weights: dict[str, float] | None = None,
) -> dict:
    """The whole stage as one plain function: bundle, cross-validation, artifacts, summary.

    `stage` names the artifacts' folder (a mining run trains once per round: "round-1", ...);
    `human_weights` down-weights human labels that label refinement flagged."""
    specs = choose_experts(list(features), list(config.experts))
    labels_df = training_labels(registry, extra_labels, human_weights)
    if labels_df["label"].nunique() < 2 or labels_df["label"].value_counts().min() < config.folds:
        raise ValueError(
            f"training needs at least {config.folds} labelled clips of each of two or more "
            f"labels for {config.folds}-fold CV; got {labels_df['label'].value_counts().to_dict()}"
        )
    usable = registry[registry["status"].isin(USABLE)]
    predict_ids = usable.loc[usable["split"] != "train", "clip_id"].astype(str).tolist()
    ids = sorted(set(labels_df["clip_id"]) | set(predict_ids))
    bundle = build_bundle(ids, features, specs)
    result = cross_validate(bundle, labels_df, label_set, config, predict_ids)
    refs = save_training(result, store, run_id, stage)
    return {
        "result": result,
        "refs": refs,
        "experts": [asdict(s) for s in specs],
        "n_train": len(labels_df),
        "n_predict": len(predict_ids),
        "config": json.loads(json.dumps(asdict(config))),
    }


train_task = task(train, name="train-baseline", cache_policy=NO_CACHE)
