"""Probe: the mining process's memory at each step of building a round's inputs (one process,
no Prefect), to see what grows with the pool. Run on a workspace kept by bench/scale_pool.py:

    python bench/memory_probe.py [--frames] /tmp/scale-bench/pool-25000 /tmp/scale-bench/pool-100000

Prints VmRSS / VmHWM (resident and peak resident MB of this process) after each step: start,
the features loaded (Arrow tables, `feature_tables`, as the mining flow loads them; with
`--frames` pandas frames, `feature_frames`, as it did before and train/finalize do), the bundle built
(`training_set`), the frames dropped, one training of 1 epoch (3 folds, 1 seed, one process).
Each workspace is probed in a fresh process, so the peaks do not mix.
"""

from __future__ import annotations

import gc
import subprocess
import sys


def memory() -> str:
    """This process's resident and peak resident memory, MB."""
    with open("/proc/self/status") as f:
        found = {line.split(":")[0]: int(line.split()[1]) // 1024 for line in f
                 if line.startswith(("VmRSS", "VmHWM"))}
    return f"rss {found['VmRSS']} MB, peak {found['VmHWM']} MB"


def probe(workspace: str, frames: bool) -> None:
    from storage.feature_cache import release_arrow_memory
    from storage.records import feature_frames, feature_tables, resolve_dataset
    from storage.workspace import Workspace
    from tasks.train import TrainConfig, train, training_set

    ws = Workspace(workspace)
    state = resolve_dataset(ws.catalog, None)
    print(f"{workspace}\n  start: {memory()}", flush=True)
    registry = ws.artifacts.load(f"{state.registry_artifact_id}.parquet")
    load = feature_frames if frames else feature_tables
    features, _ = load(ws.catalog, ws.artifacts, state.dataset)
    print(f"  features loaded ({'pandas frames' if frames else 'Arrow tables'}): {memory()}", flush=True)
    config = TrainConfig(folds=3, seeds=(0,), model={"epochs": 1}, workers=1)
    data = training_set(registry, features, config)
    print(f"  bundle built: {memory()}", flush=True)
    del features
    gc.collect()
    release_arrow_memory()                                   # as the mining flow does
    print(f"  features dropped: {memory()}", flush=True)
    train(registry, data, state.labels, config, ws.artifacts, "memory-probe")
    print(f"  trained (1 epoch): {memory()}", flush=True)


if __name__ == "__main__":
    flags = [a for a in sys.argv[1:] if a == "--frames"]
    paths = [a for a in sys.argv[1:] if a != "--frames"]
    if len(paths) > 1:
        for path in paths:
            subprocess.run([sys.executable, __file__, *flags, path], check=True)
    else:
        probe(paths[0], bool(flags))
