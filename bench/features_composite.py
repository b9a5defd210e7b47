"""Benchmark: `mersemi features` against decoding alone and the bare extractor loop.

For each default extractor and for the whole default set, on the first N clips of a
composite corpus (../shared/bench/build_composite.py), in one run:
  decode  - the rate of merely decoding the clips with PyAV (frames at 2 fps and/or audio);
  bare    - the same extractor code in a plain loop, one clip at a time: no sharding, no
            cache, no Parquet, no Prefect (the floor for our own overhead);
  w1, w2  - `mersemi features` with 1 and 2 worker processes, cold cache;
  cached  - the same command again (everything cached).
Rates are clips per second of the stage itself: the flow run's start-to-end time as the
catalog records it (`runs.started_at`/`finished_at`); the command's wall time, which adds the
Python start and Prefect's temporary server, is printed beside it. Peak memory is the largest
summed RSS of the process tree, sampled every 0.1 s.

    python bench/features_composite.py --corpus /tmp/c0 --clips 1500
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import duckdb
import psutil

from models.extractors import DEFAULT_SET

VIDEO = {"visual_global", "visual_face", "au"}
AUDIO = {"audio_handcrafted", "audio_egemaps"}


def peak_rss(cmd: list[str], env: dict) -> tuple[float, int, str]:
    """(wall seconds, peak RSS bytes of the process tree, stdout) of a command."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak, done = 0, threading.Event()

    def sample():
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, _ = proc.communicate()
    done.set()
    thread.join()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}")
    return time.perf_counter() - t0, peak, out


def make_manifest(corpus: Path, n: int, out: Path) -> list[str]:
    with open(corpus / "track_all_candidates.csv", encoding="utf-8") as f:
        names = sorted(r["name"] for r in csv.DictReader(f))[:n]
    subs = {}
    with open(corpus / "subtitle_chieng.csv", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            subs[r["name"]] = r["english"]
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["name", "video", "audio", "text", "label", "split"])
        for name in names:
            w.writerow([name, corpus / "video" / f"{name}.mp4", corpus / "audio" / f"{name}.wav",
                        subs.get(name, ""), "", "candidate"])
    return names


def bare(manifest: Path, extractors: list[str]) -> dict:
    """Child process: the plain loop (and decoding alone with --decode)."""
    from models.extractors import build
    from models.extractors.clip_media import ClipMedia
    from models.media import load_audio, sample_frames
    from storage.ingest import build_registry, media_paths, probe_with_cache, scan
    from storage.labels import MER2025_LABELS
    from tasks.features import clip_inputs

    scanned = scan(manifest, MER2025_LABELS)
    probes, _ = probe_with_cache(media_paths(scanned), None)
    clips = clip_inputs(build_registry(scanned, "bench", probes))
    if extractors == ["decode"]:
        t0 = time.perf_counter()
        for c in clips:
            sample_frames(c.video_path, 2.0, 32)
            load_audio(c.audio_path)
        return {"seconds": time.perf_counter() - t0, "clips": len(clips)}
    built = [build(name) for name in extractors]
    for ex in built:
        ex.setup()
        ex.extract(clips[:1], {clips[0].clip_id: ClipMedia(clips[0])})   # warm-up (numba, models)
    t0 = time.perf_counter()
    for c in clips:
        media = {c.clip_id: ClipMedia(c)}
        for ex in built:
            ex.extract([c], media)
    return {"seconds": time.perf_counter() - t0, "clips": len(clips)}


def stage_seconds(ws: Path, run_id: str) -> float:
    con = duckdb.connect(str(ws / "catalog.duckdb"), read_only=True)
    try:
        start, end = con.execute("SELECT started_at, finished_at FROM runs WHERE run_id = ?",
                                 [run_id]).fetchone()
    finally:
        con.close()
    return (end - start).total_seconds()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--clips", type=int, default=1500)
    ap.add_argument("--extractors", default=",".join(DEFAULT_SET) + ",all")
    ap.add_argument("--bare", help=argparse.SUPPRESS)
    ap.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare:
        result = bare(args.manifest, args.bare.split(","))
        result["maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps(result))
        return
    tmp = Path(tempfile.mkdtemp(prefix="mersemi-fbench-"))
    env = os.environ | {"PREFECT_HOME": str(tmp / "prefect"), "DO_NOT_TRACK": "1",
                        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONUNBUFFERED": "1"}
    manifest = tmp / "manifest.csv"
    n = len(make_manifest(args.corpus, args.clips, manifest))
    me = [sys.executable, __file__, "--corpus", str(args.corpus), "--manifest", str(manifest)]
    cli = [sys.executable, "-m", "flows.cli"]
    _, _, out = peak_rss([*me, "--bare", "decode"], env)
    decode = json.loads(out)
    print(f"{n} clips of {args.corpus}; decode only (2 fps frames + audio): "
          f"{n / decode['seconds']:.1f} clips/s\n")
    print("| extractor | bare clips/s | w1 clips/s | w1/bare | w2 clips/s | w2/w1 | cached s | cached/cold "
          "| w1 wall s | peak MB bare/w1/w2 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.extractors.split(","):
        names = list(DEFAULT_SET) if name == "all" else [name]
        _, _, out = peak_rss([*me, "--bare", ",".join(names)], env)
        b = json.loads(out)
        row = {"bare": n / b["seconds"], "bare_mb": b["maxrss"] / 2**20}
        for workers in (1, 2):
            ws = tmp / f"ws-{name}-{workers}"
            subprocess.run([*cli, "ingest", str(manifest), "-w", str(ws), "--json"], env=env,
                           check=True, capture_output=True)
            wall, peak, out = peak_rss([*cli, "features", "-w", str(ws), "--json", "--workers",
                                        str(workers), "--extractors", ",".join(names)], env)
            summary = json.loads(out.strip().splitlines()[-1])
            secs = stage_seconds(ws, summary["run_id"])
            row[f"w{workers}"], row[f"w{workers}_wall"] = n / secs, wall
            row[f"w{workers}_mb"], row[f"w{workers}_s"] = peak / 2**20, secs
            if workers == 2:
                _, _, out = peak_rss([*cli, "features", "-w", str(ws), "--json", "--workers", "2",
                                      "--extractors", ",".join(names)], env)
                again = json.loads(out.strip().splitlines()[-1])
                row["cached_s"] = stage_seconds(ws, again["run_id"])
        print(f"| {name} | {row['bare']:.1f} | {row['w1']:.1f} | {row['w1'] / row['bare']:.2f} | "
              f"{row['w2']:.1f} | {row['w2'] / row['w1']:.2f} | {row['cached_s']:.2f} | "
              f"{row['cached_s'] / row['w2_s']:.3f} | {row['w1_wall']:.1f} | "
              f"{row['bare_mb']:.0f}/{row['w1_mb']:.0f}/{row['w2_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
