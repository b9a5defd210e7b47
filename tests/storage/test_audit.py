"""storage/audit.py on a small catalog built by hand, with hand-computed expectations.

Two mining runs on dataset `d` (labels happy, sad, angry) over four candidates:
M1 (10:00) round 1: alpha accepted happy, beta rejected sad (quorum), gamma rejected (tie),
delta accepted sad; round 2: beta accepted sad, gamma rejected happy (precision).
M2 (12:00) round 1: alpha accepted sad, beta rejected happy (quorum), gamma accepted happy,
delta rejected sad (balance). Teacher run T1 finished 09:00 (before M1), T2 at 11:00 (before M2,
after M1 started) says angry for alpha. Truth: alpha happy, beta happy, gamma sad, delta sad.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from storage import audit
from storage.artifacts import ArtifactStore
from storage.catalog import Catalog, sql
from storage.feature_cache import SCHEMA

ROOT_DIR = "/data/d"
NAMES = ["alpha", "beta", "gamma", "delta"]
IDS = {n: f"id-{n}" for n in NAMES}
ACCEPT = "; estimated precision 0.900 (accepted set 0.900 >= 0.90)"


def t(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 1, 5, hour, minute)


def v(**votes: tuple[str, float]) -> str:
    """votes JSON as the flow writes it; voter names with '/' given as moe_final etc."""
    names = {"moe": "moe/final", "att": "attention/final", "teacher": "teacher"}
    return json.dumps({names[k]: {"label": lab, "confidence": c} for k, (lab, c) in votes.items()},
                      sort_keys=True)


DECISIONS = [  # run, round, clip, decision, label, confidence, reason, votes
    ("M1", 1, "alpha", "accepted", "happy", 0.95, "vote: 3 of 3 voters say happy" + ACCEPT,
     v(moe=("happy", .9), att=("happy", .8), teacher=("happy", .7))),
    ("M1", 1, "beta", "rejected", "sad", 0.6, "vote: 2 of 3 voters say sad, quorum 3",
     v(moe=("sad", .6), att=("happy", .55), teacher=("sad", .9))),
    ("M1", 1, "gamma", "rejected", None, None, "vote: tie at 1 of 3 voters",
     v(moe=("angry", .4), att=("sad", .5), teacher=("happy", .8))),
    ("M1", 1, "delta", "accepted", "sad", 0.92, "vote: 3 of 3 voters say sad" + ACCEPT,
     v(moe=("sad", .95), att=("sad", .9), teacher=("sad", .85))),
    ("M1", 2, "beta", "accepted", "sad", 0.91, "vote: 3 of 3 voters say sad" + ACCEPT,
     v(moe=("sad", .9), att=("sad", .7), teacher=("sad", .9))),
    ("M1", 2, "gamma", "rejected", "happy", 0.6, "vote: 2 of 3 voters say happy; precision: estimated "
     "0.600, accepting it would take the accepted set below 0.90",
     v(moe=("happy", .6), att=("sad", .7), teacher=("happy", .8))),
    ("M2", 1, "alpha", "accepted", "sad", 0.93, "vote: 3 of 3 voters say sad" + ACCEPT,
     v(moe=("sad", .9), att=("sad", .9), teacher=("sad", .6))),
    ("M2", 1, "beta", "rejected", "happy", 0.5, "vote: 2 of 3 voters say happy, quorum 3",
     v(moe=("happy", .5), att=("sad", .5), teacher=("happy", .5))),
    ("M2", 1, "gamma", "accepted", "happy", 0.9, "vote: 3 of 3 voters say happy" + ACCEPT,
     v(moe=("happy", .9), att=("happy", .9), teacher=("happy", .9))),
    ("M2", 1, "delta", "rejected", "sad", 0.8, "vote: 3 of 3 voters say sad; balance: more accepted clips "
     "would leave angry below 0.5 x its labelled share (estimated 0.800)",
     v(moe=("sad", .8), att=("sad", .8), teacher=("sad", .8))),
]


def insert(con, table: str, frame: pd.DataFrame) -> None:
    con.register("frame", frame)
    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM frame")   # table names are this file's
    con.unregister("frame")


def build_catalog(root: Path) -> tuple[Catalog, ArtifactStore]:
    catalog, store = Catalog(root / "catalog.duckdb"), ArtifactStore(root / "artifacts")
    features = pa.table({"clip_id": [IDS["alpha"], IDS["beta"]], "status": ["ok", "error"],
                         "reason": [None, "decoder failed on frame 3"],
                         "dim": pa.array([4, None], pa.int32()),
                         "vector": pa.array([[0.1, 0.2, 0.3, 0.4], None], pa.list_(pa.float32()))})
    features = pa.table({f.name: features[f.name] if f.name in features.column_names
                         else pa.nulls(2, f.type) for f in SCHEMA}, schema=SCHEMA)
    ref = store.save(features, "F1", "features", "visual_face")
    with catalog.writer() as s:
        con = s.con
        insert(con, "runs", pd.DataFrame({
            "run_id": ["I1", "F1", "T1", "T2", "M1", "M2", "Z1"],
            "command": ["ingest", "features", "teacher", "teacher", "mine", "mine", "finalize"],
            "status": ["completed"] * 6 + ["completed"],
            "started_at": [t(7), t(8), t(8, 30), t(10, 30), t(10), t(12), t(13)],
            "finished_at": [t(7, 5), t(8, 10), t(9), t(11), t(11, 30), t(12, 30), t(13, 30)],
            "params": ['{"dataset": "d"}'] * 7}))
        insert(con, "datasets", pd.DataFrame({
            "dataset": ["d"], "root": [ROOT_DIR], "layout": ["mer2025"],
            "labels": ['["happy", "sad", "angry"]'], "registry_artifact_id": ["I1/ingest/clips"],
            "registry_sha256": ["0" * 64], "updated_at": [t(7)]}))
        insert(con, "clips", pd.DataFrame({
            "clip_id": [*IDS.values(), "id-eps"], "dataset": "d", "name": [*NAMES, "eps"],
            "split": ["candidate"] * 4 + ["train"], "label": [None] * 4 + ["happy"],
            "video_path": [f"{ROOT_DIR}/video/{n}.mp4" for n in [*NAMES, "eps"]],
            "text": [f"{n} says something" for n in [*NAMES, "eps"]],
            "has_video": True, "has_audio": True, "has_text": True, "status": "ok",
            "first_seen_run": "I1", "last_changed_run": "I1"}))
        insert(con, "artifacts", pd.DataFrame([{**ref.as_dict(), "created_at": t(8, 10)}]))
        insert(con, "feature_sets", pd.DataFrame({
            "run_id": ["F1"], "dataset": ["d"], "extractor": ["visual_face"], "extractor_key": ["vf-1"],
            "params": ["{}"], "artifact_id": [ref.artifact_id], "n_clips": [2], "n_ok": [1], "n_missing": [0],
            "n_error": [1], "dim": [4], "created_at": [t(8, 10)]}))
        answers = [("T1", n, lab, f"{n}: the teacher hears {lab}") for n, lab in
                   zip(NAMES, ["happy", "sad", "happy", "sad"], strict=True)]
        answers.append(("T2", "alpha", "angry", "alpha: the teacher now hears angry"))
        insert(con, "teacher_answers", pd.DataFrame({
            "cache_key": [f"{r}-{n}" for r, n, _, _ in answers],
            "clip_id": [IDS[n] for _, n, _, _ in answers],
            "teacher": "gemini", "model": "gemini-x", "status": "answered", "label": [a[2] for a in answers],
            "scores": [json.dumps({a[2]: 0.8}) for a in answers], "reasoning": [a[3] for a in answers],
            "run_id": [a[0] for a in answers],
            "created_at": [t(9) if a[0] == "T1" else t(11) for a in answers],
            "question": "label"}))
        insert(con, "teacher_outcomes", pd.DataFrame({
            "run_id": [a[0] for a in answers], "clip_id": [IDS[a[1]] for a in answers], "question": "label",
            "teacher": "gemini", "cache_key": [f"{a[0]}-{a[1]}" for a in answers], "outcome": "answered",
            "from_cache": False, "attempts": 1}))
        for run, stage, rnd, fin, summary in [
                ("T1", "teacher", 0, t(9), {"dataset": "d"}), ("T2", "teacher", 0, t(11), {"dataset": "d"}),
                ("M1", "mine", 1, t(10, 40), {"dataset": "d", "round": 1, "pool": 4, "cv_weighted_f1": 0.7,
                                             "stopped": None}),
                ("M1", "mine", 2, t(11, 20), {"dataset": "d", "round": 2, "pool": 2, "cv_weighted_f1": 0.72,
                                             "stopped": None}),
                ("M2", "mine", 1, t(12, 20), {"dataset": "d", "round": 1, "pool": 4, "cv_weighted_f1": 0.69,
                                             "stopped": "no clip accepted"})]:
            insert(con, "stages", pd.DataFrame({"run_id": [run], "stage": [stage], "round": [rnd],
                                                "status": ["completed"], "started_at": [fin],
                                                "finished_at": [fin],
                                                "summary": [json.dumps(summary)]}))
        insert(con, "metrics", pd.DataFrame({"run_id": ["M1", "M1"], "stage": "mine", "round": [1, 2],
                                             "name": "cv_weighted_f1", "scope": "", "value": [0.7, 0.72],
                                             "recorded_at": t(11)}))
        insert(con, "clip_decisions", pd.DataFrame({
            "run_id": [d[0] for d in DECISIONS], "round": [d[1] for d in DECISIONS],
            "clip_id": [IDS[d[2]] for d in DECISIONS], "decision": [d[3] for d in DECISIONS],
            "label": [d[4] for d in DECISIONS], "confidence": [d[5] for d in DECISIONS],
            "reason": [d[6] for d in DECISIONS], "votes": [d[7] for d in DECISIONS],
            "decided_by": "vote-estimated-v2",
            "decided_at": [t(10, 40) if d[:2] == ("M1", 1) else t(11, 20) if d[0] == "M1" else t(12, 20)
                           for d in DECISIONS]}))
        for run, rnd in sorted({d[:2] for d in DECISIONS}):         # counted with the round, as
            s.run("insert_round_counts", run_id=run, round=rnd)    # storage.records.record_round does
        insert(con, "final_predictions", pd.DataFrame({
            "run_id": ["Z1"], "clip_id": [IDS["alpha"]], "label": ["sad"], "confidence": [0.6],
            "model_label": ["happy"], "rules": ["demote(label=happy,margin=0.1)"],
            "decided_at": [t(13, 30)]}))
        insert(con, "rule_changes", pd.DataFrame({
            "run_id": ["Z1"], "clip_id": [IDS["alpha"]], "step": [0],
            "rule": ["demote(label=happy,margin=0.1)"], "before": ["happy"], "after": ["sad"],
            "detail": ["happy by 0.05 < 0.1"], "decided_at": [t(13, 30)]}))
    return catalog, store


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_catalog(tmp_path_factory.mktemp("audit"))


@pytest.fixture(scope="module")
def truth(tmp_path_factory) -> pd.DataFrame:
    path = tmp_path_factory.mktemp("truth") / "candidates_truth.csv"
    path.write_text("name,discrete\nalpha,happy\nbeta,Happy\ngamma, sad\ndelta,sad\n")
    return audit.load_truth(path)


def dump(catalog: Catalog) -> dict:
    with catalog.reader() as s:
        tables = s.query("SELECT table_name FROM information_schema.tables ORDER BY 1")["table_name"]
        return {name: s.query(f'SELECT * FROM "{name}" ORDER BY ALL').to_json(orient="records",
                                                                           date_format="iso")
                for name in tables}


def tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_rounds_report_counts_reasons_metrics_and_precision(built, truth):
    catalog, _ = built
    with catalog.reader() as s:
        report = audit.rounds_report(s, "M1", truth)
    assert report["run"]["run_id"] == "M1" and report["run"]["rounds"] == 2
    r1, r2 = report["rounds"]
    assert (r1["pool"], r1["considered"], r1["accepted"], r1["rejected"]) == (4, 4, 2, 2)
    assert r1["cv_weighted_f1"] == 0.7 and r1["metrics"] == {"cv_weighted_f1": 0.7}
    by_label = {x["label"]: x for x in r1["labels"]}
    assert by_label["happy"] | {} == {"label": "happy", "considered": 1, "accepted": 1, "rejected": 0,
                                      "judged": 1, "correct": 1, "precision": 1.0}
    sad = by_label["sad"]
    assert (sad["considered"], sad["accepted"], sad["precision"]) == (2, 1, 1.0)
    assert by_label[None]["rejected"] == 1 and by_label[None]["judged"] == 0
    assert {(x["decision"], x["kind"]): x["n"] for x in r1["reasons"]} == {
        ("accepted", "accepted"): 2, ("rejected", "vote: below quorum"): 1, ("rejected", "vote: tie"): 1}
    assert r1["precision"] == 1.0
    # Round 2: beta accepted as sad, but the truth says happy.
    assert (r2["accepted"], r2["rejected"], r2["precision"]) == (1, 1, 0.0)
    assert {(x["decision"], x["kind"]): x["n"] for x in r2["reasons"]} == {
        ("accepted", "accepted"): 1, ("rejected", "estimated precision below target"): 1}
    assert report["total"] == {"accepted": 3, "judged": 3, "correct": 2, "precision": 0.6667}


def test_default_run_is_the_newest_and_unknown_runs_are_refused(built):
    catalog, _ = built
    with catalog.reader() as s:
        report = audit.rounds_report(s)
        assert report["run"]["run_id"] == "M2" and report["rounds"][0]["stopped"] == "no clip accepted"
        kinds = {x["kind"] for x in report["rounds"][0]["reasons"]}
        assert kinds == {"accepted", "vote: below quorum", "balance"}
        with pytest.raises(ValueError, match="'I1' is not a mining run"):
            audit.rounds_report(s, "I1")


def test_truth_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "truth.csv"
    bad.write_text("name,label\nalpha,happy\n")
    with pytest.raises(ValueError, match=r"truth.csv lacks column\(s\) discrete"):
        audit.load_truth(bad)
    with pytest.raises(ValueError, match="does not exist"):
        audit.load_truth(tmp_path / "nope.csv")


def test_accepted_clips_with_votes_and_the_teacher_run_the_mining_run_used(built, truth):
    catalog, _ = built
    with catalog.reader() as s:
        _, first, total = audit.accepted_clips(s, "M1", 1, truth=truth, reasoning=True)
        _, sad, _ = audit.accepted_clips(s, "M1", None, "sad")
        _, newer, _ = audit.accepted_clips(s, "M2", 1, "sad", reasoning=True)
    assert first["name"].tolist() == ["alpha", "delta"] and total == 2  # by confidence, 0.95 then 0.92
    alpha = first.iloc[0]
    assert alpha["votes"]["moe/final"] == {"label": "happy", "confidence": 0.9}
    assert (alpha["teacher_label"], alpha["teacher_reasoning"]) == ("happy", "alpha: the teacher hears happy")
    assert alpha["teacher_confidence"] == 0.7 and alpha["reason"].startswith("vote: 3 of 3")
    assert first["correct"].tolist() == [True, True]
    assert sad[["round", "name", "teacher_label", "teacher_confidence"]].values.tolist() == [
        [1, "delta", "sad", 0.85], [2, "beta", "sad", 0.9]]                 # the teacher's votes
    # M2 started after T2 finished: its teacher answer for alpha is T2's.
    assert newer["name"].tolist() == ["alpha"] and newer.iloc[0]["teacher_label"] == "angry"


def test_accepted_clips_reads_only_the_first_clips_when_limited_and_counts_them_all(built, truth):
    catalog, _ = built
    with catalog.reader() as s:
        _, every, total = audit.accepted_clips(s, "M1", truth=truth, reasoning=True)
        _, first, first_total = audit.accepted_clips(s, "M1", truth=truth, reasoning=True, limit=2)
        _, none, none_total = audit.accepted_clips(s, "M1", limit=0)
        _, beyond, beyond_total = audit.accepted_clips(s, "M1", limit=10)
        with pytest.raises(ValueError, match="limit must be 0 or more, not -1"):
            audit.accepted_clips(s, "M1", limit=-1)
    assert total == len(every) == 3 and first_total == none_total == beyond_total == 3
    pd.testing.assert_frame_equal(first, every.head(2))                 # the same rows, in order
    assert none.empty and len(beyond) == 3


def test_clip_history_by_name_or_id(built):
    catalog, store = built
    with catalog.reader() as s:
        h = audit.clip_history(s, store, "alpha")
        by_id = audit.clip_history(s, store, IDS["alpha"], run_id="M2")
        beta = audit.clip_history(s, store, "beta")
        gamma = audit.clip_history(s, store, "gamma")
        with pytest.raises(ValueError, match="no clip named 'nobody'"):
            audit.clip_history(s, store, "nobody")
    assert h["clip"]["video_path"] == f"{ROOT_DIR}/video/alpha.mp4" and h["clip"]["split"] == "candidate"
    assert [(d["run_id"], d["round"], d["decision"], d["label"]) for d in h["decisions"]] == [
        ("M1", 1, "accepted", "happy"), ("M2", 1, "accepted", "sad")]
    assert h["decisions"][0]["votes"]["teacher"] == {"label": "happy", "confidence": 0.7}
    assert [(x["run_id"], x["label"], x["reasoning"]) for x in h["teacher"]] == [
        ("T1", "happy", "alpha: the teacher hears happy"),
        ("T2", "angry", "alpha: the teacher now hears angry")]
    assert [(f["extractor"], f["status"], f["dim"]) for f in h["features"]] == [("visual_face", "ok", 4)]
    assert (h["final"][0]["label"], h["final"][0]["model_label"]) == ("sad", "happy")
    assert h["rule_changes"][0]["after"] == "sad"
    assert [d["run_id"] for d in by_id["decisions"]] == ["M2"]
    assert beta["features"][0]["status"] == "error" and "decoder failed" in beta["features"][0]["reason"]
    assert gamma["features"][0]["status"] == "absent"
    assert [d["decision"] for d in beta["decisions"]] == ["rejected", "accepted", "rejected"]


def _scans(s, query: str, params: dict, table: str) -> list[str]:
    plan = s.con.execute("EXPLAIN ANALYZE " + sql(query), params).fetchall()[0][1]
    scans = [block for block in plan.split("╭─") if f'Table: "catalog".main.{table}' in block
             or f"Table: {table}" in block]
    assert scans, (query, table, plan)
    return scans


def test_a_clip_is_found_by_name_through_its_index(built):
    """The clip by name is an index lookup (schema v8's index on clips.name)."""
    catalog, _ = built
    with catalog.reader() as s:
        scans = _scans(s, "audit_find_clip", {"clip": "alpha"}, "clips")
    assert all("Index Scan" in block for block in scans), scans


def test_a_clips_decisions_are_read_from_the_row_groups_that_can_hold_it(tmp_path):
    """No index on clip_decisions since v11 (committing into it loaded it whole): a round's
    decisions are written in clip_id order, so `audit clip` reads one row group of a round
    (each row group's min/max clip_id), not the table (bench/audit_scale.py: 75.7 ms at a
    million decisions, against 74.9 with the index)."""
    from storage.catalog import ROW_GROUP_SIZE
    from storage.records import record_round, start_run
    from storage.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    start_run(ws.catalog, "mine-1", "mine", {})
    ids = [f"c{i:06d}" for i in range(3 * ROW_GROUP_SIZE)]        # the pool, sorted
    decisions = pd.DataFrame({"clip_id": ids, "decision": "rejected", "label": "happy", "confidence": 0.5,
                              "reason": "consensus: teacher says sad, moe/final says happy", "votes": "{}"})
    frames = (decisions.iloc[a:a + 10_000] for a in range(0, len(decisions), 10_000))
    record_round(ws.catalog, "mine-1", 1, t(9), frames, "consensus-estimated-v2", {"round": 1})
    with ws.catalog.reader() as s:
        scans = _scans(s, "audit_clip_decisions", {"clip_id": ids[ROW_GROUP_SIZE + 7], "run_id": None},
                       "clip_decisions")
        found = s.frame("audit_clip_decisions", clip_id=ids[ROW_GROUP_SIZE + 7], run_id=None)
    assert len(scans) == 1 and "Row Groups Scanned: 1 / 3" in scans[0], scans
    assert found[["run_id", "round", "decision"]].values.tolist() == [["mine-1", 1, "rejected"]]


def test_round_diff_within_a_run_and_across_runs(built):
    catalog, _ = built
    with catalog.reader() as s:
        _, _, within = audit.round_diff(s, 1, 2, "M1")
        _, _, across = audit.round_diff(s, 2, 1, "M1", "M2")
        with pytest.raises(ValueError, match="rounds 1..2, not 3"):
            audit.round_diff(s, 1, 3, "M1")
    assert within[["change", "name", "label_b"]].values.tolist() == [["entered", "beta", "sad"]]
    # M1 after round 2: alpha happy, delta sad, beta sad accepted; gamma rejected (proposed happy).
    assert across[["change", "name", "decision_a", "label_a", "decision_b", "label_b"]].values.tolist() == [
        ["changed", "alpha", "accepted", "happy", "accepted", "sad"],
        ["entered", "gamma", "rejected", "happy", "accepted", "happy"],
        ["left", "beta", "accepted", "sad", "rejected", "happy"],
        ["left", "delta", "accepted", "sad", "rejected", "sad"]]


def test_disagreements_ranked_and_exported_as_label_studio_tasks(built):
    catalog, _ = built
    with catalog.reader() as s:
        _, latest = audit.disagreements(s, "M1")
        _, first = audit.disagreements(s, "M1", round_=1)
        labels = audit.dataset_labels(s, "d")
    # Latest decisions of M1: only gamma (round 2) has a model (attention, sad .7) against the teacher.
    assert latest["name"].tolist() == ["gamma"]
    top = latest.iloc[0]
    assert top[["round", "model_label", "model_votes", "score"]].tolist() == [2, "sad", "1/2", 0.28]
    # Round 1: gamma 0.8 x 0.45 x 2/2 = 0.36 before beta 0.9 x 0.55 x 1/2 = 0.2475.
    assert first[["rank", "name", "score"]].values.tolist() == [[1, "gamma", 0.36], [2, "beta", 0.2475]]
    tasks = audit.review_tasks(first, media_prefix="/data/local-files/?d=")
    assert tasks[0]["data"] | {} == {
        "video": "/data/local-files/?d=video/gamma.mp4", "text": "gamma says something", "clip": "gamma",
        "clip_id": "id-gamma", "rank": 1, "score": 0.36, "decision": "rejected",
        "reason": "vote: tie at 1 of 3 voters", "teacher_reasoning": "gamma: the teacher hears happy"}
    preds = tasks[0]["predictions"]
    assert [p["model_version"] for p in preds] == ["teacher:gemini-x", "attention/final", "moe/final"]
    assert preds[0] == {"model_version": "teacher:gemini-x", "score": 0.8, "result": [
        {"id": "id-gamma-0", "from_name": "emotion", "to_name": "video", "type": "choices",
         "value": {"choices": ["happy"]}}]}
    ids = [r["id"] for task in tasks for p in task["predictions"] for r in p["result"]]
    assert len(ids) == len(set(ids))                                  # Label Studio wants unique ids
    rows = audit.review_rows(first)
    assert rows["video"].tolist() == [f"{ROOT_DIR}/video/gamma.mp4", f"{ROOT_DIR}/video/beta.mp4"]
    config = audit.labelstudio_config(labels)
    assert '<Choices name="emotion" toName="video"' in config
    assert '<Video name="video" value="$video"/>' in config
    assert [c for c in labels if f'<Choice value="{c}"/>' in config] == ["happy", "sad", "angry"]


def test_filters_are_bound_never_pasted(built):
    catalog, store = built
    before = dump(catalog)
    evil = "x' OR 1=1 --"
    with catalog.reader() as s:
        _, frame, total = audit.accepted_clips(s, "M1", None, evil)
        assert frame.empty and total == 0
        with pytest.raises(ValueError, match="is not a mining run"):
            audit.mine_run(s, evil)
        with pytest.raises(ValueError, match="no clip named"):
            audit.clip_history(s, store, "' OR '1'='1")
    assert dump(catalog) == before


def test_console_reads_tables_and_artifact_views(built):
    catalog, store = built
    with catalog.reader() as s:
        rows, truncated = audit.run_sql(s, store, "SELECT count(*) AS n FROM clip_decisions "
                                        "WHERE run_id = $run", {"run": "M1"})
    assert rows["n"].tolist() == [6] and not truncated
    with catalog.reader() as s:
        rows, _ = audit.run_sql(s, store, "SELECT status FROM artifact_features_visual_face "
                                "WHERE clip_id = $c", {"c": IDS["beta"]})
    assert rows["status"].tolist() == ["error"]
    with catalog.reader() as s:
        rows, truncated = audit.run_sql(s, store, "SELECT name FROM clips ORDER BY name", max_rows=2)
    assert rows["name"].tolist() == ["alpha", "beta"] and truncated


REFUSED = ["DELETE FROM runs", "UPDATE runs SET status = 'x'", "INSERT INTO runs (run_id) VALUES ('x')",
           "CREATE TABLE x AS SELECT 1", "CREATE TEMP TABLE x (a INT)", "DROP TABLE runs",
           "COPY runs TO '{out}/runs.csv'", "COPY (SELECT 1) TO '{artifact}'", "ATTACH '{out}/x.duckdb' AS x",
           "DETACH catalog", "INSTALL httpfs", "LOAD httpfs", "SET threads = 1", "RESET threads",
           "PRAGMA enable_profiling", "CALL pragma_version()", "CHECKPOINT", "EXPORT DATABASE '{out}/exp'",
           "SELECT 1; DELETE FROM runs", "EXPLAIN ANALYZE DELETE FROM runs", "VACUUM", "BEGIN", "USE memory"]
# Statements that parse as SELECT but would write or reach outside: they fail without effect.
FAILING = ["WITH d AS (DELETE FROM runs RETURNING *) SELECT * FROM d",
           "SELECT * FROM read_csv('{out}/secret.csv')", "SELECT * FROM read_parquet('{artifact}')",
           "SELECT * FROM glob('{out}/*')"]


def test_console_refuses_or_fails_every_write_and_escape(built, tmp_path):
    catalog, store = built
    artifact = store.path_of("F1/features/visual_face")
    (tmp_path / "secret.csv").write_text("a\n1\n")
    before, files, outside = dump(catalog), tree(catalog.path.parent), tree(tmp_path)
    for text in REFUSED:
        with catalog.reader() as s, pytest.raises(audit.Refused):
            audit.run_sql(s, store, text.format(out=tmp_path, artifact=artifact))
    for text in FAILING:
        with catalog.reader() as s, pytest.raises(ValueError, match="query failed"):
            audit.run_sql(s, store, text.format(out=tmp_path, artifact=artifact))
    assert dump(catalog) == before
    assert tree(catalog.path.parent) == files and tree(tmp_path) == outside   # no file written or changed


WRITER = """
import sys, time
from storage.catalog import Catalog
catalog = Catalog(sys.argv[1])
end = time.monotonic() + 3.0
i = 0
while time.monotonic() < end:
    with catalog.writer() as s:      # short transactions, as the flow's records are
        s.run("insert_metric", run_id="W", stage="w", round=0, name="tick", scope=str(i), value=1.0,
              recorded_at=__import__("storage.catalog").catalog.now())
        time.sleep(0.05)
    i += 1
    time.sleep(0.02)
print(i)
"""


@pytest.mark.slow
def test_a_reader_gets_in_while_a_writer_process_holds_short_transactions(tmp_path):
    catalog, _ = build_catalog(tmp_path)
    repo = Path(__file__).resolve().parents[2]
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(catalog.path)], cwd=repo,
                              env={**os.environ, "PYTHONPATH": str(repo)}, stdout=subprocess.PIPE, text=True)
    try:
        seen = []
        deadline = datetime.now().timestamp() + 60
        while writer.poll() is None and datetime.now().timestamp() < deadline:
            with catalog.reader() as s:
                seen.append(audit.rounds_report(s, "M1")["total"]["accepted"])
    finally:
        ticks = int(writer.communicate(timeout=60)[0])
    assert writer.returncode == 0 and ticks > 0 and seen and set(seen) == {3}
