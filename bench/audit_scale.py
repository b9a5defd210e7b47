"""Benchmark: the audit's read queries on a catalog of one million synthetic decisions.

Builds (once; `--rebuild` to redo) a workspace whose catalog holds one mining run of ten
rounds over a pool of about 125,000 candidate clips that shrinks as clips are accepted (as the
flow does: an accepted clip leaves the pool), 1,000,000 decisions in all, each with a votes
JSON of four voters and a reason in the flow's words; the clips table, a teacher run with one
answer and outcome per candidate, three feature artifacts (status per clip, 32-d vectors),
per-round stage summaries and metrics. Everything is generated with numpy and loaded through
Arrow in a few statements, not row by row.

Then times, through the storage functions (each call opens the catalog read-only, queries,
closes, as the CLI does), `rounds`, `accepted --run R --round N` with and without `--label`,
and `clip NAME`, several times each, printing median and max milliseconds; and each once
through a `mersemi audit` process (start-up included), for the record.

    python bench/audit_scale.py --workspace /tmp/audit-scale [--repeats 15] [--rebuild]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from storage import audit
from storage.artifacts import ArtifactStore
from storage.catalog import Catalog
from storage.feature_cache import ARTIFACT_ROW_GROUP
from storage.feature_cache import SCHEMA as FEATURE_SCHEMA
from storage.labels import MER2025_LABELS
from storage.records import record_artifact

LABELS = list(MER2025_LABELS)
VOTERS = ["attention/final", "moe/expert:audio_text", "moe/final", "teacher"]   # sorted, as json.dumps
ACCURACY = {"attention/final": 0.62, "moe/expert:audio_text": 0.55, "moe/final": 0.66, "teacher": 0.72}
DECISIONS, ROUNDS, ACCEPT_RATE, N_TRAIN = 1_000_000, 10, 0.05, 5_000
DATASET = "bench"
T0 = datetime(2026, 1, 5, 2, 0, 0)


def clip_ids(names: list[str]) -> list[str]:
    """The ingest's clip id (storage.ingest.clip_id), for many names."""
    return [hashlib.blake2b(f"{DATASET}\x00{n}".encode(), digest_size=8).hexdigest() for n in names]


def pool_sizes() -> list[int]:
    """Pool per round: each round accepts floor(ACCEPT_RATE x pool), which leaves the pool; the
    first pool is the smallest whose rounds reach DECISIONS, the last round is trimmed to it."""
    def plan(first: int) -> list[int]:
        sizes = [first]
        for _ in range(ROUNDS - 1):
            sizes.append(sizes[-1] - int(sizes[-1] * ACCEPT_RATE))
        return sizes
    lo, hi = DECISIONS // ROUNDS, DECISIONS
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if sum(plan(mid)) >= DECISIONS else (mid + 1, hi)
    sizes = plan(lo)
    sizes[-1] -= sum(sizes) - DECISIONS
    return sizes


def clips_frame(n_candidates: int, rng: np.random.Generator) -> pd.DataFrame:
    names = [f"sample_{i:08d}" for i in range(n_candidates + N_TRAIN)]
    n = len(names)
    split = np.array(["candidate"] * n_candidates + ["train"] * N_TRAIN)
    truth = rng.integers(0, len(LABELS), n)
    return pd.DataFrame({
        "clip_id": clip_ids(names), "dataset": DATASET, "name": names, "split": split,
        "label": np.where(split == "train", np.array(LABELS)[truth], None),
        "video_path": [f"video/{x}.mp4" for x in names], "audio_path": [f"audio/{x}.wav" for x in names],
        "text": "I can't believe it's you!", "video_sha256": "ab" * 32, "audio_sha256": "cd" * 32,
        "duration_s": rng.uniform(2, 12, n).round(2), "has_video": True, "has_audio": True,
        "has_text": True, "status": "ok", "reason": None, "first_seen_run": "ingest-bench",
        "last_changed_run": "ingest-bench", "_truth": np.array(LABELS)[truth]})


def votes_for(truth: np.ndarray, rng: np.random.Generator) -> tuple[dict, dict]:
    """Per voter: label index and confidence; right with the voter's accuracy."""
    labels, confs = {}, {}
    for v in VOTERS:
        right = rng.random(len(truth)) < ACCURACY[v]
        wrong = (truth + rng.integers(1, len(LABELS), len(truth))) % len(LABELS)
        labels[v] = np.where(right, truth, wrong)
        confs[v] = np.round(np.where(right, rng.beta(6, 2, len(truth)), rng.beta(3, 3, len(truth))), 4)
    return labels, confs


def votes_json(labels: dict, confs: dict) -> pd.Series:
    """The votes column as json.dumps(sort_keys=True) writes it, built column-wise."""
    names = np.array(LABELS, dtype=object)
    parts = None
    for v in VOTERS:
        piece = (f'"{v}": {{"confidence": ' + pd.Series(confs[v]).astype(str)
                 + ', "label": "' + pd.Series(names[labels[v]]) + '"}')
        parts = piece if parts is None else parts + ", " + piece
    return "{" + parts + "}"


def round_decisions(r: int, pool: np.ndarray, truth: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """One round's decisions: vote policy (quorum 3 of 4), the best-estimated 5 % accepted."""
    labels, confs = votes_for(truth, rng)
    stacked = np.stack([labels[v] for v in VOTERS])
    counts = np.stack([(stacked == k).sum(axis=0) for k in range(len(LABELS))])
    top, agree = counts.argmax(axis=0), counts.max(axis=0)
    agreeing = np.mean([np.where(labels[v] == top, confs[v], 0) for v in VOTERS], axis=0)
    mean_conf = agreeing * len(VOTERS) / np.maximum(agree, 1)
    rho = np.round(np.clip(mean_conf * (0.7 + 0.1 * agree), 0, 0.999), 3)
    allowed = agree >= 3
    order = np.argsort(-np.where(allowed, rho, -1), kind="stable")
    n_accept = int(len(pool) * ACCEPT_RATE)
    if allowed.sum() < n_accept:
        raise RuntimeError(f"round {r}: only {allowed.sum()} clips reach the quorum, {n_accept} wanted")
    accepted = np.zeros(len(pool), bool)
    accepted[order[:n_accept]] = True
    top_name = np.array(LABELS, dtype=object)[top]
    vote = ("vote: " + pd.Series(agree).astype(str) + " of 4 voters say " + pd.Series(top_name))
    reason = np.where(
        accepted, vote + "; estimated precision " + pd.Series(rho).map("{:.3f}".format)
        + " (accepted set 0.951 >= 0.95)",
        np.where(allowed, vote + "; precision: estimated " + pd.Series(rho).map("{:.3f}".format)
                 + ", accepting it would take the accepted set below 0.95", vote + ", quorum 3"))
    return pd.DataFrame({"clip_id": pool, "decision": np.where(accepted, "accepted", "rejected"),
                         "label": top_name, "confidence": np.where(allowed, rho, mean_conf.round(4)),
                         "reason": reason, "votes": votes_json(labels, confs).to_numpy(),
                         "new_clip": r == 1})


def teacher_frames(clips: pd.DataFrame, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    cand = clips[clips["split"] == "candidate"]
    truth = cand["_truth"].map(LABELS.index).to_numpy()
    labels, confs = votes_for(truth, rng)
    lab = np.array(LABELS, dtype=object)[labels["teacher"]]
    keys = [hashlib.sha256(c.encode()).hexdigest() for c in cand["clip_id"]]
    answers = pd.DataFrame({
        "cache_key": keys, "clip_id": cand["clip_id"].to_numpy(), "teacher": "replay", "model": "bench",
        "media_sha256": "ab" * 32, "prompt_sha256": "ef" * 32, "params_sha256": "01" * 32,
        "status": "answered", "label": lab,
        "scores": '{"' + pd.Series(lab) + '": ' + pd.Series(confs["teacher"]).astype(str) + "}",
        "reasoning": "The speaker's raised brows and rising pitch suggest " + pd.Series(lab) + ".",
        "raw_text": None, "tokens_in": 900, "tokens_out": 40, "latency_s": 1.5, "cost_usd": 0.0004,
        "error": None, "run_id": "teacher-bench", "created_at": T0 + timedelta(hours=1),
        "question": "label", "modality_shares": None})
    outcomes = pd.DataFrame({"run_id": "teacher-bench", "clip_id": answers["clip_id"], "question": "label",
                             "teacher": "replay", "cache_key": keys, "outcome": "answered",
                             "from_cache": False, "attempts": 1})
    return answers, outcomes


def feature_refs(store: ArtifactStore, clips: pd.DataFrame, rng: np.random.Generator) -> list:
    """Three feature artifacts (one row per usable clip, sorted by clip id, as the stage writes)."""
    ids = np.sort(clips["clip_id"].to_numpy())
    refs = []
    for name in ("audio_egemaps", "text", "visual_face"):
        status = np.where(rng.random(len(ids)) < 0.01, "error", "ok")
        vectors = rng.normal(size=(len(ids), 32)).astype(np.float32)
        table = pa.table({
            "clip_id": ids, "media_key": ids, "extractor": [name] * len(ids),
            "extractor_key": [f"{name}-v1"] * len(ids),
            "status": status, "reason": np.where(status == "error", "decoder failed on frame 12", None),
            "dim": pa.array(np.where(status == "ok", 32, 0), pa.int32()),
            "vector": pa.array([v if s == "ok" else None for v, s in zip(vectors, status, strict=True)],
                               pa.list_(pa.float32())),
            "seq_len": pa.nulls(len(ids), pa.int32()), "seq_dim": pa.nulls(len(ids), pa.int32()),
            "sequence": pa.nulls(len(ids), pa.list_(pa.float32())), "extra": pa.nulls(len(ids), pa.string())},
            schema=FEATURE_SCHEMA)
        refs.append((name, store.save(table, "features-bench", "features", name,
                                          row_group_size=ARTIFACT_ROW_GROUP),
                     int((status == "ok").sum()), int((status == "error").sum())))
    return refs


def build(root: Path, seed: int = 0) -> dict:
    """Write the workspace (artifacts + catalog); returns what was built."""
    rng = np.random.default_rng(seed)
    sizes = pool_sizes()
    clips = clips_frame(sizes[0], rng)
    store, catalog = ArtifactStore(root / "artifacts"), Catalog(root / "catalog.duckdb")
    features = feature_refs(store, clips, rng)
    answers, outcomes = teacher_frames(clips, rng)
    cand = clips[clips["split"] == "candidate"]
    truth = cand.set_index("clip_id")["_truth"].map(LABELS.index)
    # The flow decides its pool in clip id order (usable_pool is sorted); so does this.
    pool, accepted_total = np.sort(cand["clip_id"].to_numpy()), 0
    with catalog.writer() as s:
        for i, (run, command) in enumerate((("ingest-bench", "ingest"), ("features-bench", "features"),
                                            ("teacher-bench", "teacher"), ("mine-bench", "mine"))):
            s.run("insert_run", run_id=run, command=command, started_at=T0 + timedelta(hours=i),
                  params={"dataset": DATASET}, code_version="bench", flow_run_id=None, cache_key=None)
        s.register("registry", clips.drop(columns="_truth"))
        s.run("upsert_clips", dataset=DATASET, run_id="ingest-bench")
        s.unregister("registry")
        s.run("upsert_dataset", dataset=DATASET, root=str(root / "corpus"), layout="mer2025",
              labels=LABELS, registry_artifact_id="ingest-bench/ingest/clips", registry_sha256="0" * 64,
              updated_at=T0)
        for name, ref, n_ok, n_err in features:
            record_artifact(s, ref)
            s.run("insert_feature_set", run_id="features-bench", dataset=DATASET, extractor=name,
                  extractor_key=f"{name}-v1", params={}, artifact_id=ref.artifact_id, n_clips=n_ok + n_err,
                  n_ok=n_ok, n_missing=0, n_error=n_err, dim=32, seq_dim=None, created_at=T0)
        s.register("answers", answers)
        s.run("teacher_upsert_answers")
        s.register("outcomes", outcomes.drop(columns="run_id"))
        s.run("teacher_insert_outcomes", run_id="teacher-bench")
        for run, stage, hour in (("teacher-bench", "teacher", 2), ("features-bench", "features", 1)):
            s.run("insert_stage", run_id=run, stage=stage, round=0, status="completed",
                  started_at=T0 + timedelta(hours=hour), finished_at=T0 + timedelta(hours=hour, minutes=50),
                  summary={"dataset": DATASET})
        for r in range(1, ROUNDS + 1):
            decisions = round_decisions(r, pool, truth.loc[pool].to_numpy(), rng)
            at = T0 + timedelta(hours=3 + r)
            s.register("decisions", decisions)
            s.run("insert_decisions", run_id="mine-bench", round=r, decided_by="vote-estimated-v2",
                  decided_at=at)
            s.unregister("decisions")
            s.run("insert_round_counts", run_id="mine-bench", round=r)       # as record_round does
            acc = decisions[decisions["decision"] == "accepted"]
            by_label = {str(k): int(v) for k, v in acc["label"].value_counts().items()}
            cv = round(0.70 + 0.004 * r, 4)
            s.run("insert_stage", run_id="mine-bench", stage="mine", round=r, status="completed",
                  started_at=at - timedelta(minutes=50), finished_at=at,
                  summary={"round": r, "dataset": DATASET, "pool": len(pool), "accepted": len(acc),
                           "accepted_by_label": by_label, "cv_weighted_f1": cv, "thresholds": {},
                           "estimate": {}, "stopped": None})
            for name, scope, value in [("cv_weighted_f1", "", cv),
                                       *((("accepted", f"label:{k}", v) for k, v in by_label.items()))]:
                s.run("insert_metric", run_id="mine-bench", stage="mine", round=r, name=name, scope=scope,
                      value=float(value), recorded_at=at)
            accepted_total += len(acc)
            # The next pool: the clips not accepted (the last round trimmed to make DECISIONS).
            left = decisions.loc[decisions["decision"] != "accepted", "clip_id"].to_numpy()
            pool = left[: sizes[r]] if r < ROUNDS else left
        s.run("finish_run", run_id="mine-bench", status="completed", finished_at=T0 + timedelta(hours=14),
              error=None)
        for run in ("ingest-bench", "features-bench", "teacher-bench"):
            s.run("finish_run", run_id=run, status="completed", finished_at=T0 + timedelta(hours=3),
                  error=None)
        n = s.con.execute("SELECT count(*) FROM clip_decisions").fetchone()[0]
    return {"decisions": n, "clips": len(clips), "accepted": accepted_total, "pools": sizes}


def timed(fn, repeats: int) -> tuple[float, float, float]:
    """(median wall ms, max wall ms, median CPU ms of this process) of `fn` over `repeats` calls."""
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append((time.perf_counter() - w) * 1000)
        cpus.append((time.process_time() - c) * 1000)
    return statistics.median(walls), max(walls), statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args()
    root = args.workspace
    if args.rebuild or not (root / "catalog.duckdb").exists():
        shutil.rmtree(root, ignore_errors=True)
        t0 = time.perf_counter()
        built = build(root)
        print(f"built {built['decisions']:,} decisions over {ROUNDS} rounds, {built['clips']:,} clips, "
              f"{built['accepted']:,} accepted, in {time.perf_counter() - t0:.0f} s")
    catalog, store = Catalog(root / "catalog.duckdb"), ArtifactStore(root / "artifacts")
    with catalog.reader() as s:
        n = s.con.execute("SELECT count(*) FROM clip_decisions").fetchone()[0]
        name = s.con.execute("SELECT name FROM clips WHERE split = 'candidate' ORDER BY name LIMIT 1 "
                             "OFFSET 5000").fetchone()[0]

    def call(fn):
        def go():
            with catalog.reader() as s:      # open, query, close: what one CLI call does
                return fn(s)
        return go

    cases = {"rounds": call(lambda s: audit.rounds_report(s)),
             "accepted --round 5": call(lambda s: audit.accepted_clips(s, "mine-bench", 5)),
             "accepted --round 5 (the table's first 100)": call(lambda s: audit.accepted_clips(
                 s, "mine-bench", 5, limit=100)),
             "accepted --round 5 --label sad": call(lambda s: audit.accepted_clips(s, "mine-bench", 5,
                                                                                    "sad")),
             f"clip {name}": call(lambda s: audit.clip_history(s, store, name))}
    print(f"{n:,} decisions; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print("\n| query (storage function) | median ms | max ms | CPU ms (median) |\n|---|---|---|---|")
    for label, fn in cases.items():
        fn()                                                     # warm the OS page cache once
        med, worst, cpu = timed(fn, args.repeats)
        print(f"| {label} | {med:.1f} | {worst:.1f} | {cpu:.1f} |")
    print("\n| command (one `mersemi audit` process, start-up included) | wall s |\n|---|---|")
    for cmd in (["rounds"], ["accepted", "--run", "mine-bench", "--round", "5", "--json"],
                ["accepted", "--run", "mine-bench", "--round", "5", "--label", "sad", "--json"],
                ["clip", name, "--json"]):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "flows.cli", "audit", *cmd, "-w", str(root)], check=True,
                       capture_output=True)
        print(f"| mersemi audit {' '.join(cmd)} | {time.perf_counter() - t0:.2f} |")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
