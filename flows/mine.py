"""Flow: multi-round voting data mining (pseudo-labels accepted round by round)."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from flows.faults import checkpoint
from flows.params import MineParams
from flows.train import run_key, train_config
from storage.catalog import now
from storage.feature_cache import TRAINING_COLUMNS
from storage.records import (
    accepted_pseudo_labels,
    feature_set_ids,
    finish_run,
    keyed_run,
    latest_stage_run,
    lazy_feature_frames,
    learning_registry,
    mined_clips,
    record_round,
    recorded_run,
    resolve_dataset,
    stage_summaries,
)
from storage.teacher_store import run_label_answers
from storage.workspace import Workspace, new_run_id
from tasks.memory import release_memory
from tasks.mine import (
    MiningPolicy,
    accepted_labels,
    discard_round,
    label_counts,
    mark_new,
    merge_accepted,
    mine_round_task,
    new_clip_counts,
    remaining_pool,
    resume_rounds,
    stop_reason,
    teacher_votes,
    usable_pool,
)
from tasks.train import labelled_rows, train_task, training_labels, training_set_task


@flow(name="mine", validate_parameters=True)
def mine_flow(params: MineParams) -> dict:
    ws = Workspace(params.workspace)
    run_id, logger = new_run_id("mine"), get_run_logger()
    config = train_config(params)
    policy = MiningPolicy(params.policy, baseline=params.baseline, quorum=params.quorum,
                          min_share_ratio=params.min_share_ratio, selection=params.selection)
    rounds: list[dict] = []
    with ws.exclusive(run_id):
        state = resolve_dataset(ws.catalog, params.dataset)
        # Inputs: registry, newest features, and the newest teacher run's answers.
        feature_ids = feature_set_ids(ws.catalog, state.dataset)
        teacher = latest_stage_run(ws.catalog, "teacher", state.dataset)
        key = run_key(ws, "mine", params, state, feature_ids, teacher)
        # Same inputs, code and parameters as an earlier run: reuse it, or resume it if it broke.
        prior = keyed_run(ws.catalog, "mine", key)
        if prior and prior["status"] == "completed":
            return mine_result(ws, prior["run_id"], state.dataset, cached=True)
        resume = prior is not None
        run_id = prior["run_id"] if resume else run_id
        with recorded_run(ws.catalog, run_id, "mine", params.model_dump(mode="json"), flow_run.id,
                          cache_key=key, resume=resume):
            registry = learning_registry(ws.artifacts, state)
            features, _ = lazy_feature_frames(ws.catalog, ws.artifacts, state.dataset, TRAINING_COLUMNS)
            # Every round trains on clips of this one bundle, built a feature set at a time (each
            # frame is read, used and let go before the next: FeatureFrames).
            inputs = training_set_task(registry, features, config)
            # The teacher's votes, made once: its answers are the same in every round.
            tvotes = teacher_votes(run_label_answers(ws.catalog, teacher[0])) if teacher else None
            human = training_labels(registry)[["clip_id", "label"]]
            # Clips earlier mining runs decided: the others are new (added since the last run).
            mined_before = mined_clips(ws.catalog, state.dataset, run_id)
            # Rounds a broken run already recorded are kept as they are, not decided again.
            done = [row["summary"] for row in stage_summaries(ws.catalog, run_id, "mine")]
            accepted, pool, best_cv = resume_rounds(done, accepted_pseudo_labels(ws.catalog, run_id),
                                                    usable_pool(registry), params.weighting)
            # The rounds' training reads only the labelled rows (the pool is in `pool`).
            registry = labelled_rows(registry)
            rounds = list(done)
            if done:
                logger.info("resuming mine run %s after round %d", run_id, len(done))
            last = len(done) if done and done[-1]["stopped"] else params.rounds
            for r in range(len(done) + 1, last + 1):
                started = now()
                # Train on the human labels plus every clip accepted so far; predict the pool.
                # quote(): Prefect would otherwise walk the bundle's 100,000s of arrays for futures.
                out = train_task(registry, quote(inputs), state.labels, config, ws.artifacts, run_id,
                                 extra_labels=accepted, stage=f"round-{r}")
                checkpoint(f"mine:round-{r}:trained")
                # Vote on the clips still in the pool; decide; keep the labels balanced.
                result = mine_round_task(pool, out["result"].pool, out["result"].oof, human,
                                         tvotes, state.labels, params.voters, policy,
                                         params.target_precision, label_counts(accepted))
                refs = [*out["refs"]["models"], out["refs"]["oof"], out["refs"]["predictions"]]
                # Decided: the round's predictions and fold models (stored) are let go, and the
                # heap the vote freed handed back, before the decisions are recorded.
                del out
                release_memory()
                stop = stop_reason(result, best_cv, params.max_f1_drop)
                if stop and result.accepted_by_label:
                    result.decisions = discard_round(result.decisions, stop)
                result.decisions = mark_new(result.decisions, mined_before)
                summary = round_summary(r, state.dataset, len(pool), result, stop)
                rounds.append(summary)
                record_round(ws.catalog, run_id, r, started, result.records(),
                             f"{params.policy}-{params.selection}-v2",
                             summary, round_metrics(result), refs, [state.registry_artifact_id, *feature_ids])
                logger.info("round %d: %d of %d accepted %s", r, summary["accepted"], len(pool),
                            result.accepted_by_label)
                round_artifacts(summary, [ws.artifacts.path(ref) for ref in refs
                                          if ref.path.endswith(".parquet")])
                if stop:
                    break
                # Accepted clips join training and leave the pool.
                new = accepted_labels(result.decisions, params.weighting)
                accepted = merge_accepted(accepted, new)
                pool = remaining_pool(pool, new["clip_id"])
                best_cv = max(best_cv or 0.0, result.cv_weighted_f1)
                # Recorded: the next round's training must not hold this round's predictions too.
                del result
                release_memory()
            finish_run(ws.catalog, run_id, "completed")
    summary = mine_result(ws, run_id, state.dataset, resumed_after=len(done) if resume else None)
    create_markdown_artifact(key="mine-summary", markdown=mine_markdown(summary),
                             description=f"pseudo-label mining on {state.dataset}")
    return summary


def mine_result(ws: Workspace, run_id: str, dataset: str, cached: bool = False,
                resumed_after: int | None = None) -> dict:
    """A mining run's summary, from its recorded rounds."""
    rounds = [row["summary"] for row in stage_summaries(ws.catalog, run_id, "mine")]
    return {"run_id": run_id, "dataset": dataset, "rounds": rounds,
            "accepted_per_round": [r["accepted"] for r in rounds],
            "accepted_total": sum(r["accepted"] for r in rounds if not r["stopped"]),
            "stopped": rounds[-1]["stopped"] if rounds else None,
            # Round 1 sees the whole pool: how much of it no earlier mining run had decided.
            "new_clips": rounds[0].get("new_in_pool") if rounds else None,
            "cached": cached, "resumed_after_round": resumed_after, "workspace": str(ws.root)}


def round_artifacts(summary: dict, parquet_files: list) -> None:
    """The round in the Prefect UI: accepted clips per label (a table) and a markdown summary
    with its metrics and links to its Parquet files."""
    r = summary["round"]
    rows = [{"label": lab, "accepted": n, "threshold": summary["thresholds"].get(lab)}
            for lab, n in sorted(summary["accepted_by_label"].items())]
    create_table_artifact(key=f"mine-round-{r}-accepted", table=rows or [{"label": "", "accepted": 0}],
                          description=f"round {r}: accepted pseudo-labels per label")
    estimate = summary.get("estimate") or {}
    lines = [f"# Round {r} on `{summary['dataset']}`", "",
             f"- pool: {summary['pool']}, accepted: {summary['accepted']}",
             f"- new to mining (no earlier run decided them): {summary.get('new_in_pool')} in the pool, "
             f"{summary.get('new_accepted')} accepted",
             f"- CV weighted F1 on human labels: {summary['cv_weighted_f1']:.3f}",
             f"- stopped: {summary['stopped'] or 'no'}"]
    if estimate:
        lines.append(f"- calibration temperature: {estimate['temperature']:.2f}; teacher's estimated "
                     f"accuracy per label: {estimate['teacher_accuracy']}")
    lines += ["", "Artifacts:"] + [f"- [{p.name}](file://{p})" for p in parquet_files]
    create_markdown_artifact(key=f"mine-round-{r}", markdown="\n".join(lines),
                             description=f"round {r} summary")


def round_summary(r: int, dataset: str, pool: int, result, stop: str | None) -> dict:
    return {"round": r, "dataset": dataset, "pool": pool,
            "accepted": int(sum(result.accepted_by_label.values())),
            "accepted_by_label": result.accepted_by_label,
            "cv_weighted_f1": round(result.cv_weighted_f1, 4),
            "thresholds": {k: round(v, 4) for k, v in result.thresholds.items()},
            "estimate": result.estimate,
            **new_clip_counts(result.decisions),
            "stopped": stop}


def round_metrics(result) -> list[tuple[str, str, float]]:
    rows = [("cv_weighted_f1", "", result.cv_weighted_f1)]
    rows += [("accepted", f"label:{lab}", n) for lab, n in result.accepted_by_label.items()]
    return rows


def mine_markdown(summary: dict) -> str:
    lines = [f"# Mining on `{summary['dataset']}`", "",
             "| round | pool | accepted | by label | CV wF1 | stop |", "|---|---|---|---|---|---|"]
    for r in summary["rounds"]:
        lines.append(f"| {r['round']} | {r['pool']} | {r['accepted']} | {r['accepted_by_label']} | "
                     f"{r['cv_weighted_f1']:.3f} | {r['stopped'] or ''} |")
    return "\n".join(lines)
