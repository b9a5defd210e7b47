"""Flow: finalize. Second stage, ensemble voting, re-ranking rules, the MER2025 submission."""

from __future__ import annotations

import shutil

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.faults import checkpoint
from flows.params import FinalizeParams
from flows.train import metric_rows, run_key, train_config
from storage.catalog import now
from storage.feature_cache import TRAINING_COLUMNS
from storage.records import (
    accepted_pseudo_labels,
    feature_set_ids,
    keyed_run,
    latest_stage_run,
    lazy_feature_frames,
    learning_registry,
    mine_run,
    record_finalize,
    recorded_run,
    resolve_dataset,
    stage_summaries,
)
from storage.teacher_store import run_label_answers
from storage.workspace import Workspace, new_run_id
from tasks.finalize import ensemble_task, final_frame, save_final, submission
from tasks.mine import pseudo_labels, teacher_votes
from tasks.predict import majority_label
from tasks.refine import flag_rate, label_weights, refine_task
from tasks.rerank import choices_summary, rerank_task
from tasks.train import train_task, training_labels


@flow(name="finalize", validate_parameters=True)
def finalize_flow(params: FinalizeParams) -> dict:
    ws = Workspace(params.workspace)
    run_id, started, logger = new_run_id("finalize"), now(), get_run_logger()
    config = train_config(params)
    with ws.exclusive(run_id):
        state = resolve_dataset(ws.catalog, params.dataset)
        # Inputs: registry, newest features, the teacher's answers, the mining run's pseudo-labels.
        feature_ids = feature_set_ids(ws.catalog, state.dataset)
        teacher = latest_stage_run(ws.catalog, "teacher", state.dataset)
        mined = mine_run(ws.catalog, state.dataset, params.mine_run)
        # Same inputs, code and parameters as a finished run: its results stand.
        key = run_key(ws, "finalize", params.model_copy(update={"mine_run": mined, "out": None}), state,
                      feature_ids, teacher)
        prior = keyed_run(ws.catalog, "finalize", key)
        if prior and prior["status"] == "completed":
            summary = stage_summaries(ws.catalog, prior["run_id"], "finalize")[0]["summary"]
            return copy_submission(summary | {"cached": True}, params.out)
        with recorded_run(ws.catalog, run_id, "finalize", params.model_dump(mode="json"), flow_run.id,
                          cache_key=key):
            registry = learning_registry(ws.artifacts, state)
            features, _ = lazy_feature_frames(ws.catalog, ws.artifacts, state.dataset, TRAINING_COLUMNS)
            tvotes = teacher_votes(run_label_answers(ws.catalog, teacher[0])) if teacher else None
            pseudo = pseudo_labels(accepted_pseudo_labels(ws.catalog, mined), params.weighting)
            human = training_labels(registry)[["clip_id", "label"]]
            # Label refinement on the first round's out-of-fold predictions (human labels only).
            flags = refine_task(ws.artifacts.load(f"{mined}/round-1/oof.parquet"), human, state.labels,
                                tvotes, params.min_sources, params.refine, params.down_weight)
            # Second stage: retrain on the human labels plus every accepted pseudo-label.
            out = train_task(registry, features, state.labels, config, ws.artifacts, run_id,
                             extra_labels=pseudo, stage="final", human_weights=label_weights(flags))
            result = out["result"]
            checkpoint("finalize:trained")
            # Ensemble over the final models; re-ranking rules kept on validation folds.
            scores, validation = ensemble_task(result.pool, result.oof, human["clip_id"],
                                               params.members, state.labels, params.ensemble)
            reranked, changes, choices = rerank_task(scores, validation, human, state.labels, params.rules,
                                                     tvotes, params.validate_rules)
            final = final_frame(registry, scores, reranked, state.labels)
            sub, fallback = submission(registry, final, majority_label(registry))
            refs = save_final(final, changes, flags, sub, ws.artifacts, run_id)
            checkpoint("finalize:saved")
            summary = finalize_summary(state.dataset, run_id, mined, out, pseudo, flags, human, choices,
                                       changes, sub, fallback, str(ws.artifacts.path(refs["submission"])),
                                       validation, reranked)
            record_finalize(ws.catalog, run_id, started, reranked, changes, flags,
                            [*out["refs"]["models"], out["refs"]["oof"], out["refs"]["predictions"],
                             *refs.values()],
                            [state.registry_artifact_id, *feature_ids], summary,
                            metric_rows(result.metrics) + [("flagged_labels", "", len(flags)),
                                                           ("rule_changes", "", len(changes))])
            logger.info("finalize: %d pseudo-labels, %d rule changes, submission %s", len(pseudo),
                        len(changes), summary["submission"])
    create_markdown_artifact(key="finalize-summary", markdown=finalize_markdown(summary),
                             description=f"final predictions on {state.dataset}")
    return copy_submission(summary, params.out)


def copy_submission(summary: dict, out) -> dict:
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(summary["submission"], out)
        summary = summary | {"submission_copy": str(out)}
    return summary


def finalize_summary(dataset, run_id, mined, out, pseudo, flags, human, choices, changes, sub, fallback,
                     submission_path, validation, reranked) -> dict:
    cv = out["result"].metrics
    return {
        "dataset": dataset, "run_id": run_id, "mine_run": mined,
        "n_human": len(human), "n_pseudo": len(pseudo),
        "pseudo_by_label": pseudo["label"].value_counts().to_dict(),
        "flagged_labels": len(flags), "flag_rate": flag_rate(flags, human),
        "cv_weighted_f1": {f: {h: round(m["weighted_f1"], 4) for h, m in heads.items() if h == "final"}
                           for f, heads in cv.items()},
        "rules": choices_summary(choices),
        "rule_changes": changes["rule"].value_counts().to_dict(),
        "candidates": len(sub), "predicted": len(reranked), "fallback": len(fallback),
        "fallback_clips": fallback[:20],
        "label_counts": sub["discrete"].value_counts().to_dict(),
        "submission": submission_path,
        "validation_clips": len(validation), "cached": False,
    }


def finalize_markdown(summary: dict) -> str:
    lines = [f"# Finalize `{summary['dataset']}` (run `{summary['run_id']}`)", "",
             f"Second stage: {summary['n_human']} human labels + {summary['n_pseudo']} pseudo-labels "
             f"from mining run `{summary['mine_run']}`; "
             f"{summary['flagged_labels']} human labels flagged.", "",
             "| rule | kept | why |", "|---|---|---|"]
    lines += [f"| `{r['rule']}` | {'yes' if r['kept'] else 'no'} | {r['reason']} |" for r in summary["rules"]]
    lines += ["", f"Submission: `{summary['submission']}` ({summary['candidates']} candidates, "
              f"{summary['fallback']} fallback)", "", f"Labels: {summary['label_counts']}"]
    return "\n".join(lines)
