"""Probe: the mining process's memory at each step of building a round's inputs (one process,
no Prefect), to see what grows with the pool. Run on a workspace kept by bench/scale_pool.py:

    python bench/memory_probe.py /tmp/scale-bench/pool-25000 /tmp/scale-bench/pool-100000

Prints VmRSS / VmHWM (resident and peak resident MB of this process) after each step: start,
the feature frames loaded (`feature_frames`, every column or only `TRAINING_COLUMNS`; or
"lazy": `lazy_feature_frames`, read a set at a time while the bundle is built, as the training
flows do), the bundle built (`training_set`), the frames dropped, the freed heap handed back
(`release_memory`: malloc_trim), one training of 1 epoch (3 folds, 1 seed, one process). Each
workspace and mode is probed in a fresh process, so the peaks do not mix.
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


def probe(workspace: str, mode: str) -> None:
    from storage.feature_cache import TRAINING_COLUMNS
    from storage.records import feature_frames, lazy_feature_frames, resolve_dataset
    from storage.workspace import Workspace
    from tasks.memory import release_memory
    from tasks.train import TrainConfig, train, training_set

    ws = Workspace(workspace)
    state = resolve_dataset(ws.catalog, None)
    print(f"{workspace} ({mode})\n  start: {memory()}", flush=True)
    registry = ws.artifacts.load(f"{state.registry_artifact_id}.parquet")
    if mode == "lazy":
        features, _ = lazy_feature_frames(ws.catalog, ws.artifacts, state.dataset, TRAINING_COLUMNS)
    else:
        features, _ = feature_frames(ws.catalog, ws.artifacts, state.dataset,
                                     columns=TRAINING_COLUMNS if mode == "training columns" else None)
        print(f"  feature frames loaded: {memory()}", flush=True)
    config = TrainConfig(folds=3, seeds=(0,), model={"epochs": 1}, workers=1)
    data = training_set(registry, features, config)
    print(f"  bundle built: {memory()}", flush=True)
    del features
    gc.collect()
    print(f"  frames dropped: {memory()}", flush=True)
    release_memory()
    print(f"  freed memory released (malloc_trim): {memory()}", flush=True)
    train(registry, data, state.labels, config, ws.artifacts, "memory-probe")
    print(f"  trained (1 epoch): {memory()}", flush=True)


if __name__ == "__main__":
    if sys.argv[1] != "--one":
        for path in sys.argv[1:]:
            for mode in ("all columns", "training columns", "lazy"):
                subprocess.run([sys.executable, __file__, "--one", path, mode], check=True)
    else:
        probe(sys.argv[2], sys.argv[3])
