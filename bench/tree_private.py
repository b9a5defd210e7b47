"""Probe: a command's process tree, sampled every 0.25 s (/proc/PID/smaps_rollup): the tree's
peak summed PSS and, per process (the command's, each forked fold worker), its peak private
memory (Private_Clean + Private_Dirty: what it does not share). Linux only.

    PREFECT_API_URL=http://127.0.0.1:4277/api python bench/tree_private.py \
        mersemi train -w /tmp/scale-base/pool-100000 --folds 3 --seeds 0 --epochs 10 --workers 2 --json
"""
import collections
import subprocess
import sys
import time

import psutil
from scale_pool import rollup  # this folder is on the path when the script runs

MB = 1 << 20

t0 = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
ps = psutil.Process(proc.pid)
peak_tree, peak_at, priv = 0, 0, collections.defaultdict(float)
first_seen = {}
while proc.poll() is None:
    try:
        procs = [ps, *ps.children(recursive=True)]
    except psutil.NoSuchProcess:
        break
    tot = 0
    for p in procs:
        try:
            r = {k: v / MB for k, v in rollup(p.pid).items()}
        except OSError:
            continue
        tot += r["Pss"]
        key = "flow" if p.pid == proc.pid else f"w{p.pid}"
        first_seen.setdefault(key, time.perf_counter() - t0)
        priv[key] = max(priv[key], r["Private_Clean"] + r["Private_Dirty"])
    if tot > peak_tree:
        peak_tree, peak_at = tot, time.perf_counter() - t0
    time.sleep(0.25)
print(f"wall {time.perf_counter()-t0:.1f} s, tree peak Pss {peak_tree:.0f} MB at {peak_at:.0f} s")
for k, v in priv.items():
    print(f"  {k} (from {first_seen[k]:.0f} s): peak private {v:.0f} MB")
