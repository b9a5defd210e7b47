"""Benchmark: the learning stages on a pool of 100,000 synthetic candidate clips (features only).

Builds a workspace directly through the storage layer (no media): a dataset of `--train`
labelled clips and `--pool` candidates, all `ok`, recorded as an ingest (`record_ingest`);
one feature artifact per extractor in the shape the features stage writes
(storage.feature_cache.SCHEMA, recorded with `record_feature_sets`), with per-label means plus
noise so the models learn and mining accepts clips; and a replay teacher's answers (JSONL, our
format) for every candidate, right with probability `--teacher-accuracy`. Vectors are drawn
with numpy a chunk at a time and written as Parquet row groups, never clip by clip.

Feature sets (dims as the real extractors'): text 384, audio_egemaps 88, visual_face 128 (the
HOG/FER face embedding; 9 % of clips have no face: `missing`), au 65 with a T x 13 sequence
(T = `--au-frames`). `--joint T` adds audio_handcrafted (292, with its 10 Hz T x 146 sequence)
and the text's T x 384 token states, which the audio-text joint expert reads; off by default:
at 100,000 clips those sequences alone are 2-3 GB, more than everything else.

Then runs the real stages, one process at a time, on that workspace:

    mersemi train   (baseline, --folds/--seeds/--epochs as given)   + mersemi predict (the pool)
    mersemi teacher --backend replay
    mersemi mine --rounds 3 --policy consensus
    mersemi finalize
    mersemi audit rounds | accepted --round 1 | clip NAME

and prints, per stage, wall time and the peak summed PSS of the stage's process tree
(/proc/PID/smaps_rollup, every 0.25 s, children included) and the peak of the stage's process
while no fold worker was alive (the phases around the fits); per mining round its wall time (the catalog's
stages.started_at / finished_at); and the size of the feature matrix, to compare peaks across
pool sizes: its values, and as the models hold it (`build_bundle`: a row per clip and feature
set, zeros where the clip has none, a presence flag, and per sequence four integers a clip).
Several `--pool` values run one after the other in fresh workspaces.
Each stage's PSS samples go to ROOT/pss-<pool>-<stage>.csv (t_s, pss_mb, and its parts own_mb
and workers_mb: the stage's own process, its fold workers), to place its peak among its steps.
`--pseudo-ratio R` is passed to mine and finalize. With several pools, a last table gives each
stage's growth from the smallest pool beyond the held matrix's (for the stages that load it), per
added candidate: of the peak PSS, and of the peak anonymous PSS (the tree's data: Pss_Anon +
Pss_Shmem, without the pages of mapped files, which PSS splits with any other process that
maps the same libraries, so a test run beside the bench lowers it).

    python bench/scale_pool.py --root /tmp/scale --pool 25000,100000 [--folds 3 --seeds 0 --epochs 30]
        [--workers 2] [--pseudo-ratio 1]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from storage.artifacts import ArtifactRef, ArtifactStore, atomic_write, parquet_bytes
from storage.catalog import Catalog, now
from storage.feature_cache import SCHEMA
from storage.ingest import REGISTRY_COLUMNS, clip_id
from storage.labels import MER2025_LABELS
from storage.records import record_feature_sets, record_ingest

LABELS = tuple(MER2025_LABELS)
SHARES = np.array([0.30, 0.20, 0.20, 0.15, 0.10, 0.05])      # neutral .. surprise, as MER's skew
DATASET = "scale"
CHUNK = 10_000
MERSEMI = str(Path(sys.executable).with_name("mersemi"))


# ---- the workspace ------------------------------------------------------------------------
def registry_frame(n_train: int, n_pool: int, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """The registry (REGISTRY_COLUMNS, sorted by name) and every clip's true label index."""
    n = n_train + n_pool
    names = np.array([f"sample_{i:08d}" for i in range(n)], dtype=object)
    truth = rng.choice(len(LABELS), size=n, p=SHARES)
    split = np.where(np.arange(n) < n_train, "train", "candidate")
    ids = [clip_id(DATASET, x) for x in names]
    frame = pd.DataFrame({
        "clip_id": ids, "dataset": DATASET, "name": names, "split": split,
        "label": np.where(split == "train", np.array(LABELS, dtype=object)[truth], None),
        "valence": np.nan, "video_path": "video/" + pd.Series(names) + ".mp4",
        "audio_path": "audio/" + pd.Series(names) + ".wav", "text": "I can't believe it's you!",
        # Unique media hashes: the teacher's cache key includes them.
        "video_sha256": [hashlib.sha256(i.encode()).hexdigest() for i in ids],
        "audio_sha256": [hashlib.sha256(b"a" + i.encode()).hexdigest() for i in ids],
        "duration_s": rng.uniform(2, 8, n).round(2), "has_video": True, "has_audio": True,
        "has_text": True, "fps": 25.0, "width": 640, "height": 480, "audio_sample_rate": 16000,
        "audio_channels": 1, "status": "ok", "reason": None})
    return frame.astype(REGISTRY_COLUMNS), truth


def extractor_plan(au_frames: int, joint: int) -> list[dict]:
    """Per feature set: dim, sequence (frames, dim), share of clips missing, signal strength."""
    plan = [
        {"name": "text", "dim": 384, "seq": (joint, 384) if joint else None, "missing": 0.0, "signal": 1.0},
        {"name": "audio_egemaps", "dim": 88, "seq": None, "missing": 0.0, "signal": 1.2},
        {"name": "visual_face", "dim": 128, "seq": None, "missing": 0.09, "signal": 1.0},
        {"name": "au", "dim": 65, "seq": (au_frames, 13), "missing": 0.09, "signal": 0.8},
    ]
    if joint:
        plan.append({"name": "audio_handcrafted", "dim": 292, "seq": (joint, 146), "missing": 0.0,
                     "signal": 1.0})
    return plan


def _list_array(values: np.ndarray, ok: np.ndarray) -> pa.Array:
    """(n, d) float32 rows as list<float32>, null where not ok (no Python loop over rows)."""
    n, d = values.shape
    flat = values[ok].reshape(-1)
    offsets = np.zeros(n + 1, np.int32)
    offsets[1:] = np.cumsum(np.where(ok, d, 0))
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.float32()),
                                    mask=pa.array(~ok))


def write_feature_set(store: ArtifactStore, run_id: str, spec: dict, ids: np.ndarray, truth: np.ndarray,
                      rng: np.random.Generator) -> tuple[ArtifactRef, dict]:
    """One extractor's artifact, sorted by clip id as the stage writes it, a row group per chunk."""
    n, dim = len(ids), spec["dim"]
    means = rng.normal(size=(len(LABELS), dim)).astype(np.float32) * spec["signal"] / np.sqrt(dim) * 0.9
    seq_means = None
    if spec["seq"]:
        t, sd = spec["seq"]
        seq_means = rng.normal(size=(len(LABELS), sd)).astype(np.float32) * spec["signal"] / np.sqrt(sd) * 0.5
    rel = store.relpath(run_id, "features", spec["name"])
    path = store.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    counts = {"clips": n, "ok": 0, "missing": 0, "error": 0}
    with pq.ParquetWriter(tmp, SCHEMA, compression="zstd") as writer:
        for start in range(0, n, CHUNK):
            stop = min(start + CHUNK, n)
            m, y = stop - start, truth[start:stop]
            ok = rng.random(m) >= spec["missing"]
            x = (means[y] + rng.normal(size=(m, dim)).astype(np.float32)).astype(np.float32)
            status = np.where(ok, "ok", "missing")
            seq_cols = {"seq_len": pa.nulls(m, pa.int32()), "seq_dim": pa.nulls(m, pa.int32()),
                        "sequence": pa.nulls(m, pa.list_(pa.float32()))}
            if spec["seq"]:
                t, sd = spec["seq"]
                s = seq_means[y][:, None, :] + rng.normal(size=(m, t, sd)).astype(np.float32)
                seq_cols = {"seq_len": pa.array(np.where(ok, t, 0), pa.int32(), mask=~ok),
                            "seq_dim": pa.array(np.where(ok, sd, 0), pa.int32(), mask=~ok),
                            "sequence": _list_array(s.reshape(m, t * sd).astype(np.float32), ok)}
            chunk_ids = ids[start:stop]
            table = pa.table({
                "clip_id": pa.array(chunk_ids, pa.string()), "media_key": pa.array(chunk_ids, pa.string()),
                "extractor": pa.array([spec["name"]] * m, pa.string()),
                "extractor_key": pa.array([f"{spec['name']}-bench"] * m, pa.string()),
                "status": pa.array(status, pa.string()),
                "reason": pa.array(np.where(ok, None, "no face found"), pa.string()),
                "dim": pa.array(np.where(ok, dim, 0), pa.int32(), mask=~ok),
                "vector": _list_array(x, ok), **seq_cols, "extra": pa.nulls(m, pa.string())}, schema=SCHEMA)
            writer.write_table(table)
            counts["ok"] += int(ok.sum())
            counts["missing"] += int((~ok).sum())
    digest = hashlib.sha256()
    with open(tmp, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    os.replace(tmp, path)
    ref = ArtifactRef(rel[: -len(".parquet")], run_id, "features", spec["name"], rel, digest.hexdigest(),
                      n, path.stat().st_size)
    return ref, counts


def teacher_file(path: Path, names: np.ndarray, truth: np.ndarray, accuracy: float,
                 rng: np.random.Generator) -> float:
    """Our replay format, one line per candidate; returns the measured accuracy."""
    right = rng.random(len(truth)) < accuracy
    wrong = (truth + rng.integers(1, len(LABELS), len(truth))) % len(LABELS)
    said = np.where(right, truth, wrong)
    conf = np.where(right, rng.beta(6, 2, len(truth)), rng.beta(3, 3, len(truth))).round(3)
    lab = pd.Series(np.array(LABELS, dtype=object)[said])
    lines = ('{"name": "' + pd.Series(names) + '", "model": "scale-bench", "label": "' + lab
             + '", "scores": {"' + lab + '": ' + pd.Series(conf).astype(str)
             + '}, "reasoning": "synthetic"}')
    path.write_text("\n".join(lines) + "\n")
    return float(right.mean())


def build(ws: Path, n_train: int, n_pool: int, au_frames: int, joint: int, teacher_accuracy: float,
          seed: int = 0) -> dict:
    """Write the workspace; returns its sizes (the in-memory feature matrix among them)."""
    rng = np.random.default_rng(seed)
    store, catalog = ArtifactStore(ws / "artifacts"), Catalog(ws / "catalog.duckdb")
    registry, truth = registry_frame(n_train, n_pool, rng)
    ingest_run, started = "ingest-scale-bench", now()
    data = parquet_bytes(registry)
    ref = store.save(registry, ingest_run, "ingest", "clips", data=data)
    summary = {"dataset": DATASET, "registered": len(registry), "ok": len(registry), "degraded": 0,
               "errors": 0}
    record_ingest(catalog, ingest_run, started, {"bench": "scale_pool"}, DATASET, str(ws / "corpus"),
                  "mer2025", LABELS, ref, registry, pd.DataFrame(), summary)
    # The features stage writes its rows sorted by clip id.
    order = np.argsort(registry["clip_id"].to_numpy(str), kind="stable")
    ids, y = registry["clip_id"].to_numpy(str)[order], truth[order]
    features_run, started = "features-scale-bench", now()
    with catalog.writer() as s:
        s.run("insert_run", run_id=features_run, command="features", started_at=started,
              params={"bench": "scale_pool"}, code_version="bench", flow_run_id=None, cache_key=None)
    sets, matrix_bytes, held_bytes, n = [], 0, 0, len(ids)
    for spec in extractor_plan(au_frames, joint):
        fref, counts = write_feature_set(store, features_run, spec, ids, y, rng)
        seq = spec["seq"]
        matrix_bytes += counts["ok"] * 4 * (spec["dim"] + (seq[0] * seq[1] if seq else 0))
        # As the models hold it (tasks.train.build_bundle): a row per clip (zeros where it has
        # none) and a presence flag; a sequence's values and four integers per clip (Ragged).
        held_bytes += n * (4 * spec["dim"] + 1)
        if seq:
            held_bytes += counts["ok"] * 4 * seq[0] * seq[1] + n * (4 + 8 + 4 + 4 + 1)
        sets.append({"ref": fref, "extractor": spec["name"], "extractor_key": f"{spec['name']}-bench",
                     "params": {"bench": True}, "counts": counts, "dim": spec["dim"],
                     "seq_dim": seq[1] if seq else None})
    record_feature_sets(catalog, features_run, started, DATASET, ref.artifact_id, sets, {"bench": True})
    pool = registry["split"].to_numpy() == "candidate"
    measured = teacher_file(ws / "teacher.jsonl", registry["name"].to_numpy()[pool], truth[pool],
                            teacher_accuracy, rng)
    pd.DataFrame({"name": registry["name"], "discrete": np.array(LABELS)[truth]})[pool].to_csv(
        ws / "truth.csv", index=False)
    built = {"train": n_train, "pool": n_pool, "matrix_mb": matrix_bytes / 2**20,
             "held_mb": held_bytes / 2**20,
             "teacher_accuracy": measured,
             "artifacts_mb": sum(s["ref"].n_bytes for s in sets) / 2**20,
             "sample": str(registry.loc[pool, "name"].iloc[len(registry[pool]) // 2])}
    atomic_write(ws / "bench.json", json.dumps(built).encode())
    return built


# ---- measuring a stage ----------------------------------------------------------------------
def rollup(pid: int) -> dict[str, int]:
    """The kernel's memory sums of a process (/proc/PID/smaps_rollup), bytes by field (Pss,
    Private_Clean, ...). psutil's memory_full_info parses all of smaps, which took a third of a
    core at 10 samples a second on a 2 GB process."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return {k[:-1]: int(v[0]) * 1024 for k, *v in map(str.split, f) if k.endswith(":") and v}


def tree_pss(proc: psutil.Process) -> tuple[int, int, int]:
    """Proportional set size of a process and the sum of its children's: pages shared between
    them (forked fold workers share the bundle copy-on-write) counted once, split between
    sharers. Summed RSS would count a shared page once per process. Third, the tree's
    anonymous and shared-memory PSS (Pss_Anon + Pss_Shmem): its data without the pages of
    mapped files (libraries, page cache of memory-mapped files), which another process that
    maps the same libraries shrinks (PSS splits them between the processes)."""
    own = children = data = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(OSError):
            r = rollup(p.pid)
            if p.pid == proc.pid:
                own = r["Pss"]
            else:
                children += r["Pss"]
            data += r.get("Pss_Anon", 0) + r.get("Pss_Shmem", 0)
    return own, children, data


def run_stage(args: list[str], env: dict) -> dict:
    """Run one command; wall time, peak summed PSS of its process tree (and, at that peak, the
    command's own process's and its workers'), its last stdout line."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ps, trace, done = psutil.Process(proc.pid), [], threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                trace.append((time.perf_counter() - t0, *tree_pss(ps)))
            except psutil.NoSuchProcess:
                return
            done.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}:\n{err[-4000:]}")
    last = out.strip().splitlines()[-1] if out.strip() else ""
    at, own, workers, _ = max(trace, key=lambda x: x[1] + x[2]) if trace else (0.0, 0, 0, 0)
    # The phases without fold workers (building, voting, deciding, recording) peak apart from
    # the fits: both must stop growing with the pool for the stage's peak to.
    alone = max((o for _, o, w, _ in trace if not w), default=0)
    data = max((d for *_, d in trace), default=0)
    return {"wall_s": wall, "peak_mb": (own + workers) / 2**20, "peak_at_s": at, "data_mb": data / 2**20,
            "own_mb": own / 2**20, "workers_mb": workers / 2**20, "alone_mb": alone / 2**20,
            "stdout": out, "last": last, "trace": trace}


def round_times(ws: Path, run_id: str) -> list[tuple[int, float, int, int]]:
    """(round, seconds, pool, accepted) of a mining run, from the catalog's stage rows."""
    con = duckdb.connect(str(ws / "catalog.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT round, started_at, finished_at, summary FROM stages "
                           "WHERE run_id = ? AND stage = 'mine' ORDER BY round", [run_id]).fetchall()
    finally:
        con.close()
    out = []
    for r, start, end, summary in rows:
        s = json.loads(summary) if isinstance(summary, str) else summary
        out.append((r, (end - start) / timedelta(seconds=1), s["pool"], s["accepted"]))
    return out


def bench_pool(root: Path, n_pool: int, args) -> None:
    ws = root / f"pool-{n_pool}"
    t0 = time.perf_counter()
    if args.reuse and (ws / "bench.json").exists():
        # The kept workspace of an earlier run (--keep) with its stages' runs: run `--only` stages
        # again on it (a changed code version makes new mining and finalize runs).
        built = json.loads((ws / "bench.json").read_text())
    else:
        if ws.exists():
            shutil.rmtree(ws)
        ws.mkdir(parents=True)
        built = build(ws, args.train, n_pool, args.au_frames, args.joint, args.teacher_accuracy)
    build_s = time.perf_counter() - t0
    print(f"\n## pool {n_pool:,} (+ {args.train:,} labelled): workspace {ws}, built in {build_s:.1f} s; "
          f"feature matrix {built['matrix_mb']:.0f} MB of values (float32), "
          f"{built.get('held_mb', float('nan')):.0f} MB as the models hold it, artifacts "
          f"{built['artifacts_mb']:.0f} MB; teacher accuracy {built['teacher_accuracy']:.3f}", flush=True)
    env = os.environ | {"PREFECT_LOGGING_LEVEL": "WARNING"}
    train_opts = ["--folds", str(args.folds), "--seeds", args.seeds, "--epochs", str(args.epochs),
                  "--workers", str(args.workers)]
    w = ["-w", str(ws)]
    pseudo = ["--pseudo-ratio", args.pseudo_ratio] if args.pseudo_ratio else []
    stages = [
        ("train (baseline)", [MERSEMI, "train", *w, *train_opts, "--json"]),
        ("predict (pool)", [MERSEMI, "predict", *w, "--json"]),
        ("teacher (replay)", [MERSEMI, "teacher", *w, "--backend", "replay", "--answers",
                              str(ws / "teacher.jsonl"), "--json"]),
        ("mine (3 rounds)", [MERSEMI, "mine", *w, "--rounds", "3", "--policy", args.policy, *train_opts,
                             *pseudo, "--json"]),
        ("finalize", [MERSEMI, "finalize", *w, *train_opts, *pseudo, "--json"]),
        ("audit rounds", [MERSEMI, "audit", "rounds", *w, "--truth", str(ws / "truth.csv")]),
        ("audit accepted --round 1", [MERSEMI, "audit", "accepted", *w, "--round", "1"]),
        ("audit clip", [MERSEMI, "audit", "clip", built["sample"], *w]),
    ]
    print("\n| stage | wall s | peak PSS MB | of which: stage process, workers | peak at s "
          "| peak with no worker alive | peak data MB (anonymous) |\n|---|---|---|---|---|---|---|")
    results = {}
    for name, cmd in stages:
        if args.only and not any(name.startswith(o) for o in args.only.split(",")):
            continue
        res = run_stage(cmd, env)
        results[name] = res
        print(f"| {name} | {res['wall_s']:.1f} | {res['peak_mb']:.0f} | {res['own_mb']:.0f}, "
              f"{res['workers_mb']:.0f} | {res['peak_at_s']:.0f} | {res['alone_mb']:.0f} "
              f"| {res['data_mb']:.0f} |", flush=True)
        # The PSS samples, to place the peak among the stage's steps (rounds' times: the catalog).
        slug = name.split(" ")[0]
        (root / f"pss-{n_pool}-{slug}.csv").write_text(
            "t_s,pss_mb,own_mb,workers_mb,data_mb\n" + "".join(
                f"{t:.2f},{(a + b) / 2**20:.0f},{a / 2**20:.0f},{b / 2**20:.0f},{d / 2**20:.0f}\n"
                for t, a, b, d in res["trace"]))
    if "mine (3 rounds)" in results:
        summary = json.loads(results["mine (3 rounds)"]["last"])
        print("\n| round | pool | accepted | wall s (catalog) |\n|---|---|---|---|")
        for r, secs, pool, acc in round_times(ws, summary["run_id"]):
            print(f"| {r} | {pool} | {acc} | {secs:.1f} |")
    if "audit rounds" in results:
        print("\n" + "\n".join(results["audit rounds"]["stdout"].strip().splitlines()[-12:]))
    if not args.keep:
        shutil.rmtree(ws)
    # A workspace kept by an older bench (--reuse) has only the values' figure.
    return {"pool": n_pool, "held_mb": built.get("held_mb", built["matrix_mb"]),
            "peaks": {name.split(" ")[0]: (r["peak_mb"], r["data_mb"]) for name, r in results.items()
                      if not name.startswith("audit")}}


# Stages that load the feature matrix (the teacher and the audit read the catalog only).
MATRIX_STAGES = ("train", "predict", "mine", "finalize")


def growth_table(runs: list[dict]) -> str:
    """Per stage, what its peak grew from the smallest pool to each larger one beyond what the
    feature matrix as the models hold it grew (for the stages that load it), in MB and in bytes
    per added candidate: of the peak PSS and of the peak anonymous PSS (data, without mapped
    files' pages)."""
    first, lines = runs[0], []
    for later in runs[1:]:
        added = later["pool"] - first["pool"]
        for stage, (peak, data) in later["peaks"].items():
            if stage not in first["peaks"]:
                continue
            matrix = later["held_mb"] - first["held_mb"] if stage in MATRIX_STAGES else 0.0
            grew = peak - first["peaks"][stage][0] - matrix
            grew_data = data - first["peaks"][stage][1] - matrix
            lines.append(f"| {stage} | {first['pool']:,} -> {later['pool']:,} | {matrix:.0f} | "
                         f"{grew:+.0f} | {grew * 2**20 / added:+.0f} | {grew_data:+.0f} | "
                         f"{grew_data * 2**20 / added:+.0f} |")
    return ("| stage | pools | held matrix grew MB | peak PSS grew beyond it MB | B per added candidate "
            "| peak data grew beyond it MB | B per added candidate |\n|---|---|---|---|---|---|---|\n"
            + "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("/tmp/scale-bench"))
    ap.add_argument("--pool", default="100000", help="candidate pool sizes, comma-separated")
    ap.add_argument("--train", type=int, default=3000, help="labelled clips")
    ap.add_argument("--au-frames", type=int, default=16, help="frames of the AU sequence")
    ap.add_argument("--joint", type=int, default=0,
                    help="frames of the audio and text sequences (audio_text expert); 0: none")
    ap.add_argument("--teacher-accuracy", type=float, default=0.65)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--workers", type=int, default=1, help="processes fitting fold models (train, mine, "
                    "finalize)")
    ap.add_argument("--policy", default="consensus")
    ap.add_argument("--pseudo-ratio", help="mine and finalize: pseudo-labels per epoch as a multiple "
                    "of the human labels, or 'all' [default: the pipeline's]")
    ap.add_argument("--only", default="", help="stages to run (name prefixes, comma-separated)")
    ap.add_argument("--keep", action="store_true", help="keep the workspaces")
    ap.add_argument("--reuse", action="store_true", help="reuse a kept workspace (with --only)")
    args = ap.parse_args()
    print(f"scale bench: {args.train} labelled, pools {args.pool}; training --folds {args.folds} "
          f"--seeds {args.seeds} --epochs {args.epochs} --workers {args.workers} (2 fusions); "
          f"mine --policy {args.policy}; "
          f"{os.cpu_count()} cores", flush=True)
    runs = [bench_pool(args.root, n, args) for n in (int(x) for x in args.pool.split(","))]
    if len(runs) > 1:
        print("\n## growth with the pool beyond the feature matrix\n\n" + growth_table(runs))


if __name__ == "__main__":
    main()
