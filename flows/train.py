"""Flows: train the supervised baseline (k-fold CV), and predict the candidates with it."""

from __future__ import annotations

import shutil
from functools import partial

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.params import PredictParams, TrainParams
from storage.catalog import now
from storage.feature_cache import TRAINING_COLUMNS
from storage.records import (
    artifact_hashes,
    content_key,
    latest_stage_run,
    lazy_feature_frames,
    learning_registry,
    record_stage_run,
    recorded_run,
    resolve_dataset,
)
from storage.teacher_store import answers_digest
from storage.workspace import Workspace, new_run_id
from tasks.predict import load_models, majority_label, predict_task, save_predictions
from tasks.train import TrainConfig, train_task

MODEL_SETTINGS = {"hidden", "dropout", "epochs", "patience", "lr", "weight_decay", "class_weighted",
                  "aux_weight", "pseudo_ratio"}


def train_config(params: TrainParams) -> TrainConfig:
    """The training settings of a run's parameters (train and mine share them)."""
    return TrainConfig(fusions=params.fusions, experts=params.experts, folds=params.folds,
                       seeds=params.seeds, model=params.model_dump(include=MODEL_SETTINGS),
                       workers=params.workers)


def run_key(ws: Workspace, command: str, params, state, feature_ids: list[str], teacher) -> str:
    """The content key of a run: its parameters (less the workspace), the registry's, feature
    sets' and teacher answers' hashes, and the code version. Not the workers: a run with more
    processes computes the same result."""
    inputs = {"registry": state.registry_sha256,
              "features": sorted(artifact_hashes(ws.catalog, feature_ids).values()),
              "teacher": answers_digest(ws.catalog, teacher[0]) if teacher else None}
    return content_key(command, params.model_dump(mode="json", exclude={"workspace", "workers"}), inputs)


def metric_rows(metrics: dict) -> list[tuple[str, str, float]]:
    return [
        (name, f"{fusion}/{head}", m[name])
        for fusion, heads in metrics.items()
        for head, m in heads.items()
        for name in ("weighted_f1", "accuracy", "macro_f1")
    ]


@flow(name="train", validate_parameters=True)
def train_flow(params: TrainParams) -> dict:
    ws = Workspace(params.workspace)
    run_id, started = new_run_id("train"), now()
    config = train_config(params)
    with ws.exclusive(run_id):
        state = resolve_dataset(ws.catalog, params.dataset)
        with recorded_run(ws.catalog, run_id, "train", params.model_dump(mode="json"), flow_run.id):
            # Inputs: the clip registry and the newest feature set of each extractor.
            registry = learning_registry(ws.artifacts, state)
            features, feature_ids = lazy_feature_frames(ws.catalog, ws.artifacts, state.dataset,
                                                        TRAINING_COLUMNS)
            # Cross-validated training; fold models and predictions stored as artifacts.
            out = train_task(registry, features, state.labels, config, ws.artifacts, run_id)
            metrics = out["result"].metrics
            summary = {
                "dataset": state.dataset,
                "run_id": run_id,
                "n_train": out["n_train"],
                "n_predict": out["n_predict"],
                "experts": [e["name"] for e in out["experts"]],
                "models": len(out["refs"]["models"]),
                "cv_weighted_f1": {
                    f: {h: round(m["weighted_f1"], 4) for h, m in heads.items()}
                    for f, heads in metrics.items()
                },
                "predictions": out["refs"]["predictions"].path,
                "config": out["config"],
            }
            refs = [*out["refs"]["models"], out["refs"]["oof"], out["refs"]["predictions"]]
            record_stage_run(
                ws.catalog,
                run_id,
                "train",
                started,
                refs,
                [state.registry_artifact_id, *feature_ids],
                summary,
                metric_rows(metrics),
            )
    create_markdown_artifact(
        key="train-summary",
        markdown=train_markdown(summary),
        description=f"baseline training on {state.dataset}",
    )
    return summary | {"workspace": str(ws.root)}


@flow(name="predict", validate_parameters=True)
def predict_flow(params: PredictParams) -> dict:
    ws = Workspace(params.workspace)
    run_id, started = new_run_id("predict"), now()
    with ws.exclusive(run_id):
        state = resolve_dataset(ws.catalog, params.dataset)
        trained = latest_stage_run(ws.catalog, "train", state.dataset)
        if trained is None:
            raise ValueError(f"no training run for dataset {state.dataset!r}: run `mersemi train` first")
        train_run, train_artifacts = (
            trained
            if params.train_run is None
            else (params.train_run, latest_artifacts_of(ws, params.train_run))
        )
        with recorded_run(ws.catalog, run_id, "predict", params.model_dump(mode="json"), flow_run.id):
            # Inputs: the registry, the newest features and the training run's fold models.
            registry = learning_registry(ws.artifacts, state)
            # Read a feature set at a time while the candidates' bundle is built (FeatureFrames).
            features, feature_ids = lazy_feature_frames(ws.catalog, ws.artifacts, state.dataset,
                                                        TRAINING_COLUMNS)
            model_paths = [a["path"] for a in train_artifacts if a["name"].startswith("model-")]
            models = load_models(ws.artifacts, model_paths)
            majority = majority_label(registry)
            # Predict every candidate; the submission has one row per candidate clip.
            # Each model's rows go to the predictions artifact as it predicts them.
            predictions, submission, summary = predict_task(
                registry, features, models, state.labels, majority, head=params.head,
                store_predictions=partial(ws.artifacts.save_frames, run_id=run_id, stage="predict",
                                          name="predictions"),
            )
            refs = save_predictions(predictions, submission, ws.artifacts, run_id)
            summary |= {
                "dataset": state.dataset,
                "run_id": run_id,
                "train_run": train_run,
                "submission": str(ws.artifacts.path(refs[1])),
            }
            record_stage_run(
                ws.catalog,
                run_id,
                "predict",
                started,
                refs,
                [
                    state.registry_artifact_id,
                    *feature_ids,
                    *(a["artifact_id"] for a in train_artifacts if a["name"].startswith("model-")),
                ],
                summary,
            )
    if params.out is not None:
        params.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(summary["submission"], params.out)
        summary["submission_copy"] = str(params.out)
    return summary | {"workspace": str(ws.root)}


def latest_artifacts_of(ws: Workspace, run_id: str) -> list[dict]:
    with ws.catalog.reader() as s:
        rows = s.records("run_artifacts", run_id=run_id, stage="train")
    if not rows:
        raise ValueError(f"training run {run_id!r} has no model artifacts in {ws.root}")
    return rows


def train_markdown(summary: dict) -> str:
    lines = [
        f"# Baseline training on `{summary['dataset']}`",
        "",
        f"{summary['n_train']} labelled clips, {summary['models']} fold models; experts: "
        f"{', '.join(summary['experts'])}",
        "",
        "| fusion | head | CV weighted F1 |",
        "|---|---|---|",
    ]
    for fusion, heads in summary["cv_weighted_f1"].items():
        lines += [f"| {fusion} | {head} | {f1:.3f} |" for head, f1 in heads.items()]
    return "\n".join(lines)
