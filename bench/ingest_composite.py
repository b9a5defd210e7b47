"""Benchmark: `mersemi ingest` on the composite corpus (../shared/bench/build_composite.py).

Measures, in one run: the cold ingest through the CLI (Prefect flow, probe of every file,
catalog writes), the re-run on the unchanged corpus, and the bare storage-level ingest
(scan + probe + registry, no Prefect, no catalog) as the floor for our own overhead.

    python bench/ingest_composite.py --corpus /tmp/c0          # an existing build
    python bench/ingest_composite.py --build /tmp/c0           # build it first (~1 min)
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
from pathlib import Path

from storage import ingest
from storage.labels import MER2025_LABELS

SHARED = Path(__file__).resolve().parents[2] / "shared"


def timed_cli(*args: str, env: dict) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "flows.cli", *args, "--json"], env=env,
                          capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, help="an existing composite build")
    ap.add_argument("--build", type=Path, help="build the default composite here first")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    corpus = args.corpus or args.build
    if corpus is None:
        ap.error("give --corpus or --build")
    if args.build:
        subprocess.run([sys.executable, str(SHARED / "bench" / "build_composite.py"), "--out",
                        str(args.build)], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="mersemi-bench-"))
    env = os.environ | {"PREFECT_HOME": str(tmp / "prefect"), "DO_NOT_TRACK": "1",
                        "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    try:
        t0 = time.perf_counter()
        scanned = ingest.scan(corpus, MER2025_LABELS)
        probes, _ = ingest.probe_with_cache(ingest.media_paths(scanned), None, jobs=args.jobs)
        registry = ingest.build_registry(scanned, "bench", probes)
        bare = time.perf_counter() - t0
        ws = str(tmp / "ws")
        cold, summary = timed_cli("ingest", str(corpus), "-w", ws, "--jobs", str(args.jobs),
                                  env=env)
        warm, again = timed_cli("ingest", str(corpus), "-w", ws, "--jobs", str(args.jobs),
                                env=env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = len(registry)
    print(f"corpus: {corpus} ({n} clips, {summary['probed_files']} media files), jobs={args.jobs}")
    print(f"bare scan+probe+registry: {bare:6.1f} s  {n / bare:7.1f} clips/s")
    print(f"mersemi ingest (cold):    {cold:6.1f} s  {n / cold:7.1f} clips/s  "
          f"ok={summary['ok']} degraded={summary['degraded']} errors={summary['errors']}")
    print(f"mersemi ingest (re-run):  {warm:6.1f} s  changed={again['changed']} "
          f"probed={again['probed_files']}")
    print(f"ratios: bare/cold = {bare / cold:.2f}, re-run/cold = {warm / cold:.2f}")


if __name__ == "__main__":
    main()
