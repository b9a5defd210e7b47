"""How many cores one feature worker already uses (library threads: OpenCV, OpenBLAS, numba).

Runs one extractor's shards inline (one worker, the library thread pools at their defaults) on
the first N usable clips of a workspace's dataset and prints CPU seconds / wall seconds.

    python bench/cores_per_worker.py --workspace /tmp/ws-c0 visual_face audio_handcrafted audio_egemaps
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

from storage.feature_cache import FeatureCache
from storage.records import resolve_dataset
from storage.workspace import Workspace
from tasks.features import ExtractorSpec, ShardRunner, clip_inputs, plan_shards


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--clips", type=int, default=300)
    ap.add_argument("extractors", nargs="+")
    args = ap.parse_args()
    ws = Workspace(args.workspace)
    state = resolve_dataset(ws.catalog, None)
    clips = clip_inputs(ws.artifacts.load(f"{state.registry_artifact_id}.parquet"))[: args.clips]
    for name in args.extractors:
        root = Path(tempfile.mkdtemp(prefix="mersemi-cores-"))
        jobs, _ = plan_shards(clips, [ExtractorSpec.of(name)], FeatureCache(root), 100)
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        with ShardRunner(1) as runner:
            for job in jobs:
                runner.run(job, str(root))
        r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        print(f"{name}: {len(clips)} clips, wall {wall:.1f} s, cpu {cpu:.1f} s -> {cpu / wall:.2f} cores")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
