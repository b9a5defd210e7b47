"""Benchmark: the whole pipeline on the composite, cold then warm, and its orchestration overhead.

Starts a Prefect server on loopback (its own PREFECT_HOME, so the runs can be read back through
its API), runs `mersemi run CORPUS` into a fresh workspace (cold), then the same command again
with nothing changed (warm), and prints for each run:
- the wall time of the `mersemi run` process (start to exit, imports included);
- per stage, the subflow's duration and the time at least one of its task runs was running
  (the union of the task runs' intervals: concurrent shards count once);
- the overhead: pipeline wall time minus the union of all task-run intervals. This counts as
  overhead everything outside a task: process start and imports, the flow bodies' catalog
  writes and frame loading, Prefect's state and event bookkeeping. It is an upper bound on
  what Prefect itself costs.

    python bench/pipeline_composite.py --corpus /tmp/c0 --workspace /tmp/ws-pipe [-- --set mine.rounds=2 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

FER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "models" / "fer_emotion.tflite"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--workspace", type=Path, required=True, help="removed first: the cold run starts empty")
    ap.add_argument("--port", type=int, default=4391)
    ap.add_argument("--keep-server", action="store_true", help="leave the server running at the end")
    ap.add_argument("--fer", type=Path, default=FER, help="FER tflite model for the face branch "
                    "(the baseline benchmark's setting) [default: ../shared's]")
    ap.add_argument("run_args", nargs="*", help="more options for `mersemi run` (e.g. --set mine.rounds=2)")
    args = ap.parse_args()
    shutil.rmtree(args.workspace, ignore_errors=True)
    api = f"http://127.0.0.1:{args.port}/api"
    home = Path(tempfile.mkdtemp(prefix="bench-prefect-"))
    env = os.environ | {"PREFECT_HOME": str(home), "PREFECT_API_URL": api, "DO_NOT_TRACK": "1",
                        "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(args.port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT)
    try:
        wait_healthy(api)
        command = [sys.executable, "-m", "flows.cli", "run", str(args.corpus), "-w", str(args.workspace),
                   "--json", "--set", "teacher.backend=replay",
                   "--set", f"teacher.answers={args.corpus / 'teacher' / 'answers.jsonl'}",
                   *(["--set", f"features.extractor_params={{visual_face: {{encoder: 'fer:{args.fer}'}}}}"]
                     if args.fer.exists() else []), *args.run_args]
        print("command:", " ".join(command[2:]), flush=True)
        results = {}
        for label in ("cold", "warm"):
            t0 = time.perf_counter()
            proc = subprocess.run(command, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                sys.exit(f"{label} run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                         f"{proc.stderr[-3000:]}")
            results[label] = {"wall": wall, "summary": json.loads(proc.stdout.strip().splitlines()[-1])}
            results[label] |= flow_times(api, str(args.workspace))
            report(label, results[label])
        cold, warm = results["cold"], results["warm"]
        print(f"\nwarm / cold wall time: {warm['wall']:.1f} / {cold['wall']:.1f} s = "
              f"{warm['wall'] / cold['wall']:.2%}")
        print(f"cold overhead (wall - task time): {cold['wall'] - cold['tasks_union']:.1f} s = "
              f"{(cold['wall'] - cold['tasks_union']) / cold['wall']:.2%} of the cold run")
        print(f"  of which the `mersemi run` process outside the pipeline flow run: "
              f"{cold['wall'] - cold['pipeline_s']:.1f} s")
    finally:
        if not args.keep_server:
            server.terminate()
            server.wait(30)


def wait_healthy(api: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"the Prefect server at {api} did not become healthy in {timeout:.0f} s")


def post(api: str, path: str, body: dict) -> list[dict]:
    req = urllib.request.Request(f"{api}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def flow_times(api: str, workspace: str) -> dict:
    """The newest pipeline run on `workspace`: its duration, each subflow's duration and the
    union of its task runs' intervals, read from the server's API."""
    runs = post(api, "/flow_runs/filter", {"flows": {"name": {"any_": ["pipeline"]}},
                                           "sort": "START_TIME_DESC", "limit": 20})
    pipeline = next(r for r in runs if r["parameters"]["params"]["workspace"] == workspace)
    children = post(api, "/flow_runs/filter",
                    {"flow_runs": {"parent_flow_run_id": {"any_": [pipeline["id"]]}}, "limit": 50})
    flows = {f["id"]: f["name"] for f in post(api, "/flows/filter", {"limit": 200})}
    stages, all_intervals = {}, []
    for child in sorted(children, key=lambda r: r["start_time"]):
        tasks = post(api, "/task_runs/filter", {"flow_runs": {"id": {"any_": [child["id"]]}}, "limit": 200})
        intervals = [(ts(t["start_time"]), ts(t["end_time"])) for t in tasks
                     if t["start_time"] and t["end_time"]]
        all_intervals += intervals
        stages[flows[child["flow_id"]]] = {"flow_s": ts(child["end_time"]) - ts(child["start_time"]),
                                           "tasks_s": union(intervals), "tasks": len(tasks)}
    return {"pipeline_s": ts(pipeline["end_time"]) - ts(pipeline["start_time"]),
            "stages": stages, "tasks_union": union(all_intervals)}


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def union(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of closed intervals."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def report(label: str, r: dict) -> None:
    print(f"\n## {label} run: process {r['wall']:.1f} s, pipeline flow run {r['pipeline_s']:.1f} s, "
          f"task time (union) {r['tasks_union']:.1f} s")
    print("| stage | subflow s | task time s | tasks | outside tasks s |")
    print("|---|---|---|---|---|")
    for name, s in r["stages"].items():
        print(f"| {name} | {s['flow_s']:.1f} | {s['tasks_s']:.1f} | {s['tasks']} | "
              f"{s['flow_s'] - s['tasks_s']:.1f} |")
    s = r["summary"]
    cached = {k: (e["cached"], e["clips"]) for k, e in s["features"]["extractors"].items()}
    print(f"ingest changed: {s['ingest'].get('changed')}; features cached/clips: {cached}; teacher "
          f"requests: {s['teacher']['questions']['label']['requests']}; "
          f"mine cached: {s['mine'].get('cached')}; finalize cached: {s['finalize'].get('cached')}")


if __name__ == "__main__":
    main()
