"""The audit: read-only answers about mining runs, from the catalog and the Parquet artifacts.

Inputs: a read-only catalog session (`Catalog.reader()`, which waits for the writer's short
transactions, so the audit works while a pipeline runs), the artifact store, and optionally a
hidden-truth CSV (name, discrete; benchmark corpora only, for scoring).
Outputs: JSON-ready dicts and pandas frames: per-round reports (`rounds_report`), accepted
clips (`accepted_clips`), one clip's history (`clip_history`), the change between two rounds
(`round_diff`), teacher-model disagreements ranked for review (`disagreements`) and their
review tasks (`review_tasks`: CSV rows or Label Studio JSON), and a read-only SQL console
(`run_sql`).

Every query is a file `storage/sql/audit_<name>.sql` run with bound parameters; no value is
ever pasted into SQL.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import duckdb
import orjson
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from storage.artifacts import ArtifactStore
from storage.catalog import Session, sql
from storage.labels import normalize_label

TEACHER = "teacher"                       # the teacher's voter name in `votes` (MiningPolicy.teacher)
FEATURE_COLUMNS = ["clip_id", "status", "reason", "dim"]


def _json(value):
    """A JSON column's value as Python (DuckDB hands JSON over as text). orjson: thousands of
    votes objects per `accepted` call, where the standard library's parser took most of it."""
    return orjson.loads(value) if isinstance(value, str) else value


def _clean(value):
    """NaN/NaT -> None, timestamps -> ISO text: what `--json` can print."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value.item() if hasattr(value, "item") else value


def records(frame: pd.DataFrame) -> list[dict]:
    """A frame as JSON-ready dicts (votes and scores columns already parsed stay objects)."""
    return [{k: _clean(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def mine_run(s: Session, run_id: str | None = None) -> dict:
    """The newest mining run (any status: one in progress is audited as far as it got), or
    `run_id`, which must be a mining run: run_id, status, started_at, finished_at, dataset, rounds."""
    rows = s.records("audit_mine_runs", run_id=run_id)
    if not rows:
        raise ValueError(f"{run_id!r} is not a mining run in this catalog" if run_id else
                         "the catalog has no mining run: run `mersemi mine` first")
    return rows[0]


def teacher_run(s: Session, run: dict) -> str | None:
    """The teacher run a mining run read its answers from (None when there was none)."""
    if not run["dataset"]:
        return None
    rows = s.frame("audit_teacher_run", dataset=run["dataset"], before=pd.Timestamp(run["started_at"]))
    return str(rows["run_id"].iloc[0]) if len(rows) else None


def load_truth(path: str | Path) -> pd.DataFrame:
    """Hidden truth for scoring (CSV with columns name, discrete) as name, label."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"truth file {path} does not exist")
    frame = pd.read_csv(path, dtype=str)
    missing = {"name", "discrete"} - set(frame.columns)
    if missing:
        raise ValueError(f"truth file {path} lacks column(s) {', '.join(sorted(missing))} "
                         f"(it has {', '.join(frame.columns)}); expected name,discrete")
    frame = frame.dropna(subset=["name", "discrete"])
    return pd.DataFrame({"name": frame["name"].str.strip(),
                         "label": frame["discrete"].map(normalize_label)}).drop_duplicates("name")


def _precision(correct: int, judged: int) -> float | None:
    return round(correct / judged, 4) if judged else None


def _scored(s: Session, run: dict, truth: pd.DataFrame) -> pd.DataFrame:
    s.register("truth", truth)
    try:
        return s.frame("audit_round_precision", run_id=run["run_id"], dataset=run["dataset"])
    finally:
        s.unregister("truth")


def rounds_report(s: Session, run_id: str | None = None, truth: pd.DataFrame | None = None) -> dict:
    """Per round of a mining run: clips considered / accepted / rejected per label, the reason
    counts (by kind: see audit_round_counts.sql), validation metrics and, with `truth`
    (`load_truth`), the precision of the accepted pseudo-labels per label.

    Output: {"run": {...}, "rounds": [{round, pool, considered, accepted, rejected,
    not_considered, cv_weighted_f1, stopped, metrics, labels: [...], reasons: [...], precision}],
    "total": {accepted, judged, correct, precision}}.
    """
    run = mine_run(s, run_id)
    # A few hundred rows: plain Python over records, not pandas, keeps this in milliseconds.
    counts = s.con.execute(sql("audit_round_counts"), {"run_id": run["run_id"]}).fetchall()
    summaries = {r["round"]: _json(r["summary"]) or {}
                 for r in s.records("run_stage_summaries", run_id=run["run_id"], stage="mine")}
    metrics = s.con.execute(sql("audit_round_metrics"), {"run_id": run["run_id"]}).fetchall()
    scored = [] if truth is None else _scored(s, run, truth).to_dict(orient="records")
    rounds = []
    for r in sorted({c[0] for c in counts} | set(summaries)):
        rounds.append(_round_row(r, [c for c in counts if c[0] == r], summaries.get(r, {}),
                                 [m for m in metrics if m[0] == r],
                                 None if truth is None else [x for x in scored if x["round"] == r]))
    total = {"accepted": sum(x["accepted"] for x in rounds)}
    if truth is not None:
        judged, correct = sum(x["judged"] for x in scored), sum(x["correct"] for x in scored)
        total |= {"judged": judged, "correct": correct, "precision": _precision(correct, judged)}
    return {"run": run, "rounds": rounds, "total": total}


def _round_row(r: int, counts: list[tuple], summary: dict, metrics: list[tuple],
               scored: list[dict] | None) -> dict:
    """One round of `rounds_report` from its (round, label, decision, kind, n) count rows,
    summary, (round, name, scope, value) metrics and scored rows (round, label, judged, correct)."""
    per_label: dict = {}
    reasons: Counter = Counter()
    for _, label, decision, kind, n in counts:
        row = per_label.setdefault(label, {"label": label, "accepted": 0, "rejected": 0})
        if decision in ("accepted", "rejected"):
            row[decision] += n
        reasons[(decision, kind)] += n
    labels = sorted(per_label.values(), key=lambda x: (x["label"] is None, x["label"] or ""))
    for row in labels:
        row["considered"] = row["accepted"] + row["rejected"]
        if scored is not None:
            hit = [x for x in scored if x["label"] == row["label"]]
            judged, correct = sum(x["judged"] for x in hit), sum(x["correct"] for x in hit)
            row |= {"judged": judged, "correct": correct, "precision": _precision(correct, judged)}
    accepted = sum(n for (decision, _), n in reasons.items() if decision == "accepted")
    rejected = sum(n for (decision, _), n in reasons.items() if decision == "rejected")
    out = {"round": r, "pool": summary.get("pool"), "accepted": accepted, "rejected": rejected,
           "considered": accepted + rejected,
           "not_considered": sum(n for (d, _), n in reasons.items() if d == "not_considered"),
           "cv_weighted_f1": summary.get("cv_weighted_f1"), "stopped": summary.get("stopped"),
           "metrics": {name + (f"[{scope}]" if scope else ""): float(value)
                       for _, name, scope, value in metrics},
           "labels": labels,
           "reasons": [{"decision": d, "kind": k, "n": n}
                       for (d, k), n in sorted(reasons.items(), key=lambda x: (-x[1], x[0]))]}
    if scored is not None:
        judged, correct = sum(x["judged"] for x in scored), sum(x["correct"] for x in scored)
        out |= {"judged": judged, "correct": correct, "precision": _precision(correct, judged)}
    return out


def accepted_clips(s: Session, run_id: str | None = None, round_: int | None = None,
                   label: str | None = None, truth: pd.DataFrame | None = None,
                   reasoning: bool = False, limit: int | None = None) -> tuple[dict, pd.DataFrame, int]:
    """(the run, its accepted clips, how many there are): round, clip_id, name, label,
    confidence, reason, votes (dict voter -> {label, confidence}), teacher_label and
    teacher_confidence (the teacher's vote), who decided and when; with `reasoning`, the answer
    of the teacher run the mining run used (teacher_model, teacher_label, teacher_scores,
    teacher_reasoning); with `truth`, columns truth and correct. `round_`/`label` None: all.
    `limit`: the first clips only (by round, then confidence), read and decoded alone: a round
    of a large pool accepts tens of thousands."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be 0 or more, not {limit}")
    run = mine_run(s, run_id)
    where = {"run_id": run["run_id"], "round": round_, "label": label}
    frame = s.frame("audit_accepted", **where, limit=limit)
    total = len(frame) if limit is None or len(frame) < limit else int(
        s.run("audit_accepted_count", **where).fetchall()[0][0])
    frame["votes"] = [_json(v) for v in frame["votes"]]
    teacher = [v.get(TEACHER) or {} for v in frame["votes"]]
    frame["teacher_label"] = [x.get("label") for x in teacher]
    frame["teacher_confidence"] = [x.get("confidence") for x in teacher]
    if reasoning:
        frame = with_teacher_answers(s, run, frame)
    if truth is not None:
        known = truth.set_index("name")["label"]
        frame["truth"] = frame["name"].map(known)
        frame["correct"] = [None if pd.isna(t) else t == lab
                            for t, lab in zip(frame["truth"], frame["label"], strict=True)]
    return run, frame, total


def with_teacher_answers(s: Session, run: dict, frame: pd.DataFrame,
                         columns: tuple[str, ...] = ("teacher_model", "teacher_label", "teacher_scores",
                                                     "teacher_reasoning")) -> pd.DataFrame:
    """`frame` (clip_id, ...) with `columns` of the answer of the teacher run the mining run used
    (its label replaces the vote's when asked for)."""
    s.register("wanted", frame[["clip_id"]])
    try:
        answers = s.frame("audit_teacher_answers", teacher_run=teacher_run(s, run))
    finally:
        s.unregister("wanted")
    answers["teacher_scores"] = [_json(v) for v in answers["teacher_scores"]]
    kept = frame.drop(columns=[c for c in columns if c in frame.columns])
    return kept.merge(answers[["clip_id", *columns]], on="clip_id", how="left")


def find_clip(s: Session, clip: str) -> dict:
    """The clips row of a clip given by name or clip_id; a clear error when none or several."""
    rows = s.records("audit_find_clip_id", clip=clip) or s.records("audit_find_clip", clip=clip)
    if not rows:
        raise ValueError(f"no clip named {clip!r} or with that clip_id in the catalog")
    if len(rows) > 1:
        raise ValueError(f"clip name {clip!r} is taken in several datasets "
                         f"({', '.join(r['dataset'] for r in rows)}): give its clip_id "
                         f"({', '.join(r['clip_id'] for r in rows)})")
    return rows[0]


def feature_status(s: Session, store: ArtifactStore, clip: dict) -> list[dict]:
    """Per extractor of the clip's dataset (its newest feature set): the clip's row status,
    reason and dimension in that artifact, or status 'absent' (not in it) / 'missing artifact'."""
    out = []
    for fs in s.records("latest_feature_sets", dataset=clip["dataset"]):
        row = {"extractor": fs["extractor"], "run_id": fs["run_id"], "artifact_id": fs["artifact_id"]}
        path = store.path(fs["path"])
        if not path.is_file():
            out.append(row | {"status": "missing artifact", "reason": f"{path} is not in the store",
                              "dim": None})
            continue
        # Only the few status columns, filtered on clip_id: the vectors are never read.
        hit = pq.read_table(path, columns=FEATURE_COLUMNS, filters=[("clip_id", "==", clip["clip_id"])])
        found = hit.to_pylist()[0] if hit.num_rows else {"status": "absent", "reason": None, "dim": None}
        out.append(row | {k: found[k] for k in ("status", "reason", "dim")})
    return out


def clip_history(s: Session, store: ArtifactStore, clip: str, run_id: str | None = None) -> dict:
    """One clip's whole history: its registry row (media, hashes, status), feature status, every
    mining decision with every voter's vote and the reason (`run_id` None: every run), every
    teacher answer with its reasoning and outcome, final labels, rule changes and label flags."""
    row = find_clip(s, clip)
    cid = row["clip_id"]
    decisions = s.records("audit_clip_decisions", clip_id=cid, run_id=run_id)
    for d in decisions:
        d["votes"] = _json(d["votes"])
    teacher = s.records("audit_clip_teacher", clip_id=cid)
    for t in teacher:
        t["scores"], t["modality_shares"] = _json(t["scores"]), _json(t["modality_shares"])
    flags = s.records("audit_clip_label_flags", clip_id=cid)
    for f in flags:
        f["sources"] = _json(f["sources"])
    return {"clip": row, "features": feature_status(s, store, row), "decisions": decisions,
            "teacher": teacher, "final": s.records("audit_clip_final", clip_id=cid),
            "rule_changes": s.records("audit_clip_rule_changes", clip_id=cid), "label_flags": flags}


def round_diff(s: Session, round_a: int, round_b: int, run_id: str | None = None,
               run_b: str | None = None) -> tuple[dict, dict, pd.DataFrame]:
    """(run A, run B, changes) between the pseudo-labels in force after round A of `run_id` and
    after round B of `run_b` (default the same run): change (entered, left, changed), clip_id,
    name, label_a, label_b, decision_a, decision_b, decided_a, decided_b (the rounds that set them)."""
    first = mine_run(s, run_id)
    second = mine_run(s, run_b) if run_b else first
    for run, r in ((first, round_a), (second, round_b)):
        if not 1 <= r <= max(run["rounds"], 1):
            raise ValueError(f"mining run {run['run_id']} has rounds 1..{run['rounds']}, not {r}")
    frame = s.frame("audit_round_diff", run_a=first["run_id"], round_a=round_a,
                    run_b=second["run_id"], round_b=round_b)
    return first, second, frame


def _disagreement(votes: dict) -> dict | None:
    """Teacher against models in one clip's votes: None when they agree or a side is missing.
    score = teacher confidence x mean confidence of the models that disagree x their share of
    the models: highest where both sides are sure and most models disagree, which is where a
    human label settles the most."""
    teacher = votes.get(TEACHER)
    models = {v: x for v, x in votes.items() if v != TEACHER and x.get("label")}
    if not teacher or not teacher.get("label") or not models:
        return None
    against = [x for x in models.values() if x["label"] != teacher["label"]]
    if not against:
        return None
    tally = Counter(x["label"] for x in models.values())
    weight = Counter()
    for x in models.values():
        weight[x["label"]] += float(x["confidence"])
    # The models' label: most votes, then most summed confidence, then the name (deterministic).
    model_label = min(tally, key=lambda lab: (-tally[lab], -weight[lab], lab))
    mean_against = sum(float(x["confidence"]) for x in against) / len(against)
    score = float(teacher["confidence"]) * mean_against * len(against) / len(models)
    return {"teacher_label": teacher["label"], "teacher_confidence": float(teacher["confidence"]),
            "model_label": model_label, "model_votes": f"{tally[model_label]}/{len(models)}",
            "n_against": len(against), "n_models": len(models), "score": round(score, 4)}


def disagreements(s: Session, run_id: str | None = None, round_: int | None = None,
                  limit: int | None = None) -> tuple[dict, pd.DataFrame]:
    """(the run, the clips whose teacher vote differs from at least one model's), ranked for
    human review by `score` (see `_disagreement`), from each clip's latest decision in the run
    (or its decision in `round_`). Columns: rank, clip_id, name, round, decision, label, the
    teacher's label and confidence, the models' label and agreement, score, votes, reason,
    teacher_reasoning, video_path, text, root (the dataset's folder)."""
    run = mine_run(s, run_id)
    frame = s.frame("audit_latest_decisions", run_id=run["run_id"], round=round_)
    rows = []
    for rec in frame.to_dict(orient="records"):
        votes = _json(rec["votes"]) or {}
        found = _disagreement(votes)
        if found:
            rows.append(rec | found | {"votes": votes})
    columns = ["clip_id", "name", "dataset", "round", "decision", "label", "confidence", "teacher_label",
               "teacher_confidence", "model_label", "model_votes", "n_against", "n_models", "score", "votes",
               "reason", "teacher_model", "teacher_reasoning", "video_path", "text", "root"]
    found = pd.DataFrame(rows, columns=[c for c in columns if not c.startswith("teacher_")
                                        or c in ("teacher_label", "teacher_confidence")])
    found = with_teacher_answers(s, run, found, ("teacher_model", "teacher_reasoning"))[columns]
    out = found.sort_values(["score", "name"], ascending=[False, True], kind="stable")
    out = out.head(limit) if limit else out
    out.insert(0, "rank", range(1, len(out) + 1))
    return run, out.reset_index(drop=True)


def media_link(video_path: str | None, root: str | None, prefix: str | None) -> str:
    """Where a reviewer's tool finds the video: the path itself, or `prefix` + the path relative to
    the dataset's folder, URL-quoted (Label Studio local files: '/data/local-files/?d=')."""
    if not video_path:
        return ""
    if prefix is None:
        return video_path
    path = Path(video_path)
    rel = path.relative_to(root) if root and path.is_relative_to(root) else Path(path.name)
    return prefix + quote(rel.as_posix(), safe="/")


def _text(value) -> str:
    return value if isinstance(value, str) else ""


def review_tasks(frame: pd.DataFrame, media_prefix: str | None = None) -> list[dict]:
    """Label Studio import tasks (JSON list) for ranked disagreements: data {video, text, clip,
    ...} and one prediction per voter (teacher first) as a `choices` result of control `emotion`
    on object `video` (`labelstudio_config` writes the matching labeling config)."""
    tasks = []
    for rec in frame.to_dict(orient="records"):
        voters = sorted(rec["votes"], key=lambda v: (v != TEACHER, v))
        predictions = [{"model_version": (f"{TEACHER}:{rec['teacher_model']}" if v == TEACHER
                                          and isinstance(rec["teacher_model"], str) else v),
                        "score": round(float(rec["votes"][v]["confidence"]), 4),
                        "result": [{"id": f"{rec['clip_id']}-{i}", "from_name": "emotion", "to_name": "video",
                                    "type": "choices", "value": {"choices": [rec["votes"][v]["label"]]}}]}
                       for i, v in enumerate(voters) if rec["votes"][v].get("label")]
        data = {"video": media_link(rec["video_path"], rec["root"], media_prefix),
                "text": _text(rec["text"]), "clip": rec["name"],
                "clip_id": rec["clip_id"], "rank": int(rec["rank"]), "score": float(rec["score"]),
                "decision": rec["decision"], "reason": rec["reason"],
                "teacher_reasoning": _text(rec["teacher_reasoning"])}
        tasks.append({"data": data, "predictions": predictions})
    return tasks


def review_rows(frame: pd.DataFrame, media_prefix: str | None = None) -> pd.DataFrame:
    """The same review tasks as flat CSV rows (votes as JSON text)."""
    out = pd.DataFrame({
        "rank": frame["rank"], "clip": frame["name"], "clip_id": frame["clip_id"],
        "video": [media_link(v, r, media_prefix)
                  for v, r in zip(frame["video_path"], frame["root"], strict=True)],
        "text": frame["text"]})
    for col in ("round", "decision", "label", "teacher_label", "teacher_confidence", "model_label",
                "model_votes", "score", "reason", "teacher_reasoning"):
        out[col] = frame[col]
    out["votes"] = [json.dumps(v, sort_keys=True) for v in frame["votes"]]
    return out


def labelstudio_config(labels: list[str]) -> str:
    """The Label Studio labeling config the review tasks match: the video, its subtitle and the
    teacher's reasoning, and one emotion choice (control `emotion` on object `video`)."""
    choices = "\n".join(f"    <Choice value={quoteattr(lab)}/>" for lab in labels)
    return ('<View>\n  <Video name="video" value="$video"/>\n  <Text name="text" value="$text"/>\n'
            '  <Header value="Teacher\'s reasoning"/>\n'
            '  <Text name="reasoning" value="$teacher_reasoning"/>\n'
            '  <Choices name="emotion" toName="video" choice="single" showInline="true">\n'
            f'{choices}\n  </Choices>\n</View>\n')


def dataset_labels(s: Session, dataset: str) -> list[str]:
    rows = s.records("get_dataset", dataset=dataset)
    if not rows:
        raise ValueError(f"no dataset {dataset!r} in the catalog")
    return list(_json(rows[0]["labels"]))


class Refused(ValueError):
    """A console statement that could write or reach outside the catalog: never run."""


EXPLAIN = re.compile(r"^\s*EXPLAIN\s+(?:ANALYZE\s+)?(.*)$", re.IGNORECASE | re.DOTALL)
READ_ONLY = "SELECT, WITH ... SELECT, FROM, VALUES, EXPLAIN, DESCRIBE, SHOW, SUMMARIZE"


def read_statement(con: duckdb.DuckDBPyConnection, text: str) -> str:
    """The one statement of `text` if it only reads (an allow-list of DuckDB statement types:
    DESCRIBE, SHOW and SUMMARIZE parse as SELECT); Refused for anything else, COPY, ATTACH,
    INSTALL, LOAD, SET, PRAGMA, CALL, EXPORT, DDL and DML included."""
    try:
        statements = con.extract_statements(text)
    except duckdb.Error as exc:
        raise ValueError(f"cannot parse the query: {exc}") from None
    if len(statements) != 1:
        raise Refused(f"the console runs exactly one statement, got {len(statements)}")
    st = statements[0]
    if st.type == duckdb.StatementType.EXPLAIN:
        inner = EXPLAIN.match(st.query)
        if inner is None or any(x.type != duckdb.StatementType.SELECT
                                for x in con.extract_statements(inner.group(1))):
            raise Refused("EXPLAIN is allowed for a SELECT only: the console is read-only")
    elif st.type != duckdb.StatementType.SELECT:
        raise Refused(f"{st.type.name} statements are refused: the console is read-only ({READ_ONLY})")
    return st.query


def view_name(stage: str, name: str) -> str:
    """`artifact_<stage>_<name>`, lower case, runs of other characters as '_'."""
    return "artifact_" + re.sub(r"[^a-z0-9]+", "_", f"{stage}_{name}".lower()).strip("_")


def artifact_views(s: Session, store: ArtifactStore) -> list[dict]:
    """Register a view over the newest Parquet artifact of every (stage, name), named by
    `view_name`. They are pyarrow datasets read lazily (columns and filters pushed down), so
    DuckDB itself needs no file access and the console can switch it off."""
    views, seen = [], set()
    for row in s.records("audit_artifact_views"):
        name, path = view_name(row["stage"], row["name"]), store.path(row["path"])
        if name in seen or not path.is_file():
            continue
        s.register(name, pads.dataset(str(path), format="parquet"))
        seen.add(name)
        views.append({"view": name, "artifact_id": row["artifact_id"], "run_id": row["run_id"],
                      "rows": row["n_rows"]})
    return views


def lock_down(con: duckdb.DuckDBPyConnection) -> None:
    """No file, network, extension or Python-variable access from here on, and no setting can
    be changed back (the connection is read-only already)."""
    con.execute("SET python_enable_replacements = false")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def run_sql(s: Session, store: ArtifactStore, text: str, params: dict | None = None,
            max_rows: int = 1000) -> tuple[pd.DataFrame, bool]:
    """(rows, truncated) of one read-only statement over the catalog's tables and the artifact
    views, with `params` bound ($name); at most `max_rows` rows. Refused before anything runs if
    the statement is not a read (`read_statement`); the session must be a `Catalog.reader()`."""
    query = read_statement(s.con, text)
    artifact_views(s, store)
    lock_down(s.con)
    try:
        cursor = s.con.execute(query, params or None)
        columns = [d[0] for d in cursor.description]
        rows = cursor.fetchmany(max_rows + 1)
    except duckdb.Error as exc:
        raise ValueError(f"query failed: {exc}") from None
    return pd.DataFrame(rows[:max_rows], columns=columns), len(rows) > max_rows
