"""What a run report shows, gathered from the catalog and the artifact store (read-only).

Input: a workspace, a dataset, a mining run (default: the newest completed one), the finalize
run built on it (default: the newest completed one, if any) and, for benchmark corpora, a
truth CSV (`name,discrete`) with the labels the pipeline never saw.
Output: `ReportData`, plain frames (named queries `storage/sql/report_*.sql`, bound
parameters) and the seed-averaged out-of-fold predictions of every training stage, restricted
to the human-labelled clips. Nothing here computes a score: tasks/report.py does, from these.
What is missing (no finalize run yet, no teacher, no truth) is said in `notes`, never filled in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from storage.artifacts import ArtifactStore
from storage.audit import load_truth
from storage.catalog import Catalog, Session
from storage.records import mine_run, resolve_dataset


@dataclass
class ReportData:
    """Frames of one mining run (and its finalize run) for the report.

    runs: run_id, command, status, started_at, finished_at, params (dict), code_version, flow_run_id, error
    rounds: round, pool, accepted, cv_weighted_f1, stopped, temperature
    decisions: round, label, decision, n (pool clips per round, proposed label and decision)
    votes: round, clip_id, voter, label, confidence (one row per vote)
    human: clip_id, name, label (the human-labelled clips training used)
    accepted: clip_id, label, confidence, round (the run's accepted pseudo-labels)
    oof: stage (round-N, final) -> clip_id, fusion, head, p_<label> (seed mean, human clips only)
    final: clip_id, name, label, model_label, confidence, rules (finalize run only)
    rule_changes: step, rule, before, after, n; label_flags: label, alternative, action, n
    truth_accepted: round, label, n, correct; truth_final: clip_id, name, truth, label (truth CSV only)
    """

    workspace: str
    dataset: str
    labels: tuple[str, ...]
    mine_run: str
    finalize_run: str | None
    runs: pd.DataFrame
    rounds: pd.DataFrame
    decisions: pd.DataFrame
    votes: pd.DataFrame
    human: pd.DataFrame
    accepted: pd.DataFrame
    oof: dict[str, pd.DataFrame]
    members: tuple[str, ...] = ()
    final: pd.DataFrame | None = None
    rule_changes: pd.DataFrame | None = None
    label_flags: pd.DataFrame | None = None
    truth: str | None = None
    truth_accepted: pd.DataFrame | None = None
    truth_final: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)


def seed_mean_oof(oof: pd.DataFrame, clip_ids: set[str], labels: tuple[str, ...]) -> pd.DataFrame:
    """clip_id, fusion, head, p_<label>: out-of-fold rows of the human-labelled `clip_ids`,
    averaged over seeds (the arithmetic mean, as the mining round's own score takes it)."""
    cols = [f"p_{lab}" for lab in labels]
    rows = oof[oof["clip_id"].isin(clip_ids)]
    return rows.groupby(["clip_id", "fusion", "head"], sort=True)[cols].mean().reset_index()


def report_data(workspace: str | Path, dataset: str | None = None, mine_run_id: str | None = None,
                finalize_run_id: str | None = None, truth: str | Path | None = None) -> ReportData:
    """Everything the report of one mining run shows; opens the catalog read-only."""
    root = Path(workspace)
    catalog, store = Catalog(root / "catalog.duckdb"), ArtifactStore(root / "artifacts")
    state = resolve_dataset(catalog, dataset)
    mined = mine_run(catalog, state.dataset, mine_run_id)
    truth_frame = load_truth(truth) if truth else None
    with catalog.reader() as s:
        finalized = finalize_run_id or _finalize_of(s, mined)
        data = _mine_part(s, str(root), state.dataset, state.labels, mined, finalized)
        if finalized:
            _finalize_part(s, data)
        if truth_frame is not None:
            _truth_part(s, data, truth_frame, str(truth))
        oof_paths = [row["path"] for run in (mined, finalized) if run
                     for row in s.records("report_oof_artifacts", run_id=run)]
    # The Parquet files are read after the catalog is closed, so a waiting writer waits less.
    data.oof = oof_frames(store, oof_paths, set(data.human["clip_id"]), data.labels)
    _note_gaps(data)
    return data


def _finalize_of(s: Session, mined: str) -> str | None:
    rows = s.frame("report_finalize_run", mine_run=mined)
    return None if rows.empty else str(rows["run_id"].iloc[0])


def _mine_part(s: Session, workspace: str, dataset: str, labels: tuple[str, ...], mined: str,
               finalized: str | None) -> ReportData:
    runs = s.frame("report_runs", run_ids=[r for r in (mined, finalized) if r])
    if finalized and finalized not in set(runs["run_id"]):
        raise ValueError(f"{finalized!r} is not a run in this workspace")
    runs["params"] = [json.loads(p) if isinstance(p, str) else (p or {}) for p in runs["params"]]
    return ReportData(
        workspace=workspace, dataset=dataset, labels=labels, mine_run=mined, finalize_run=finalized,
        runs=runs, rounds=s.frame("report_rounds", run_id=mined),
        decisions=s.frame("report_decisions", run_id=mined),
        votes=s.frame("report_votes", run_id=mined),
        human=s.frame("report_human_labels", dataset=dataset),
        accepted=s.frame("accepted_pseudo_labels", run_id=mined), oof={})


def _finalize_part(s: Session, data: ReportData) -> None:
    run = data.finalize_run
    params = data.runs.set_index("run_id").loc[run, "params"]
    data.members = tuple(params.get("members") or ())
    data.final = s.frame("report_final_predictions", run_id=run)
    data.rule_changes = s.frame("report_rule_changes", run_id=run)
    data.label_flags = s.frame("report_label_flags", run_id=run)


def _truth_part(s: Session, data: ReportData, truth: pd.DataFrame, path: str) -> None:
    data.truth = path
    s.register("truth", truth)
    try:
        data.truth_accepted = s.frame("report_truth_accepted", run_id=data.mine_run, dataset=data.dataset)
        if data.finalize_run:
            data.truth_final = s.frame("report_truth_final", run_id=data.finalize_run)
    finally:
        s.unregister("truth")


def oof_frames(store: ArtifactStore, paths: list[str], human: set[str], labels: tuple[str, ...]
               ) -> dict[str, pd.DataFrame]:
    """stage (round-1, ..., final) -> seed-averaged OOF of the human-labelled clips, in stage order
    (`paths`: artifact paths <run>/<stage>/oof.parquet relative to the store)."""
    staged = sorted(((p.split("/")[1], p) for p in paths), key=lambda sp: _stage_order(sp[0]))
    return {stage: seed_mean_oof(store.load(path), human, labels) for stage, path in staged}


def _stage_order(stage: str) -> tuple[int, int]:
    """round-1 < round-2 < ... < round-10 < final."""
    if stage.startswith("round-") and stage[6:].isdigit():
        return 0, int(stage[6:])
    return 1, 0


def _note_gaps(data: ReportData) -> None:
    if data.finalize_run is None:
        data.notes.append(f"no completed finalize run is built on mining run {data.mine_run} yet: "
                          "the final stage's sections are empty (run `mersemi finalize`)")
    if "teacher" not in set(data.votes["voter"]):
        data.notes.append("no teacher voted in this mining run: teacher agreement is not available")
    if data.rounds.empty:
        data.notes.append(f"mining run {data.mine_run} recorded no round")
    if data.truth is None:
        data.notes.append("no truth file was given: the precision of the accepted pseudo-labels and "
                          "the test confusion matrix are not shown")
