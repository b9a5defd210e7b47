"""Stage: features. Clip registry -> one feature artifact per extractor.

Input: the dataset's clip registry (storage.ingest.REGISTRY_COLUMNS) and extractor specs.
Output: `<run_id>/features/<extractor>.parquet` per extractor (storage.feature_cache columns),
assembled from the workspace's feature cache, plus a summary per extractor.

Work is sharded: `plan_shards` cuts the clips (sorted by id) into shards of `shard_size` and
keeps, per extractor, only clips whose (extractor key, media key) is not cached yet; a
`ShardRunner` runs shards inline (one worker) or in spawned processes; each shard writes its
rows to the cache as soon as it finishes, so work resumes shard by shard after a crash.
Within a shard, clips go in batches whose decoded media (frames, faces, audio) are shared by
every extractor. A clip that fails gets status `error` and a reason; the shard goes on.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd
import pyarrow.compute as pc
from prefect import task
from prefect.cache_policies import NO_CACHE

from models.extractors import DEFAULT_SET, ClipInput
from storage.artifacts import ArtifactRef, ArtifactStore
from storage.feature_cache import ARTIFACT_ROW_GROUP, FeatureCache
from storage.ingest import USABLE
from tasks.shard_worker import ExtractorSpec, ShardJob, extract_shard, init_worker

__all__ = ["ExtractorSpec", "ShardJob", "ShardRunner", "assemble_features", "clip_inputs", "extract_shard",
           "extract_shard_here", "plan_shards", "shard_runner"]



def default_specs(overrides: dict[str, dict] | None = None) -> list[ExtractorSpec]:
    overrides = overrides or {}
    return [ExtractorSpec.of(name, overrides.get(name)) for name in DEFAULT_SET]


def clip_inputs(registry: pd.DataFrame) -> list[ClipInput]:
    """Usable clips of a registry (status ok or degraded), sorted by clip id."""
    usable = registry[registry["status"].isin(USABLE)].sort_values("clip_id")
    out = []
    for r in usable.itertuples(index=False):
        out.append(ClipInput(
            clip_id=r.clip_id, video_path=_str(r.video_path), audio_path=_str(r.audio_path),
            text=_str(r.text), has_video=bool(r.has_video), has_audio=bool(r.has_audio),
            has_text=bool(r.has_text), video_sha256=_str(r.video_sha256),
            audio_sha256=_str(r.audio_sha256)))
    return out


def _str(value) -> str | None:
    return None if value is None or pd.isna(value) else str(value)


def plan_shards(clips: list[ClipInput], specs: list[ExtractorSpec], cache: FeatureCache,
                shard_size: int = 200) -> tuple[list[ShardJob], dict[str, int]]:
    """Shards of the clips still to extract, and the number already cached per extractor."""
    keyed = {s.key: s for s in specs}
    todo_ids: dict[str, set[str]] = {}
    cached: dict[str, int] = {}
    for key, spec in keyed.items():
        extractor = spec.build()
        done = set(map(tuple, cache.done(key).itertuples(index=False)))
        todo_ids[key] = {c.clip_id for c in clips if (c.clip_id, extractor.media_key(c)) not in done}
        cached[spec.name] = len(clips) - len(todo_ids[key])
    jobs = []
    for i in range(0, len(clips), shard_size):
        chunk = clips[i:i + shard_size]
        job = ShardJob(index=i // shard_size, specs=keyed)
        for key in keyed:
            todo = [c for c in chunk if c.clip_id in todo_ids[key]]
            if todo:
                job.todo[key] = todo
        if job.todo:
            jobs.append(job)
    return jobs, cached


class ShardRunner:
    """Runs shards inline (workers=1, one at a time) or in `workers` spawned processes."""

    def __init__(self, workers: int = 1, batch_size: int = 16, max_side: int = 640) -> None:
        self.workers, self.batch_size, self.max_side = workers, batch_size, max_side
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> ShardRunner:
        if self.workers > 1:
            # spawn, not fork: the parent runs Prefect's threads and event loop.
            self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                             initializer=init_worker, initargs=(1,))
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def run(self, job: ShardJob, cache_root: str) -> dict:
        if self._pool is None:
            with self._lock:
                return extract_shard(job, cache_root, self.batch_size, self.max_side)
        return self._pool.submit(extract_shard, job, cache_root, self.batch_size, self.max_side).result()

    def __repr__(self) -> str:
        return f"ShardRunner(workers={self.workers})"


@contextmanager
def shard_runner(workers: int = 1, batch_size: int = 16, max_side: int = 640) -> Iterator[ShardRunner]:
    with ShardRunner(workers, batch_size, max_side) as runner:
        yield runner


def run_shard(runner: ShardRunner, job: ShardJob, cache_root: str) -> dict:
    return runner.run(job, cache_root)


_WORKER_READY = False


def extract_shard_here(job: ShardJob, cache_root: str, batch_size: int = 16, max_side: int = 640) -> dict:
    """Run one shard in this process, set up as a spawned shard worker is (one BLAS/torch/
    decoder thread): what a Dask worker runs. It writes only the feature cache (files under
    `cache_root`, which the worker must see); the flow process records the result."""
    global _WORKER_READY
    if not _WORKER_READY:
        init_worker(1)
        if "torch" in sys.modules:              # imported before init_worker set OMP_NUM_THREADS
            sys.modules["torch"].set_num_threads(1)
        _WORKER_READY = True
    return extract_shard(job, cache_root, batch_size, max_side) | {"worker": worker_name()}


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def plan_features(registry_path: str | os.PathLike, specs: list[ExtractorSpec], cache: FeatureCache,
                  shard_size: int = 200) -> tuple[pd.DataFrame, list[ShardJob], dict[str, int]]:
    """Load the registry and plan the shards still to extract (see plan_shards)."""
    registry = pd.read_parquet(registry_path)
    jobs, cached = plan_shards(clip_inputs(registry), specs, cache, shard_size)
    return registry, jobs, cached


@dataclass
class FeatureSet:
    extractor: str
    extractor_key: str
    params: dict
    ref: ArtifactRef
    counts: dict[str, int]
    dim: int | None
    seq_dim: int | None

    def as_record(self) -> dict:
        return {"extractor": self.extractor, "extractor_key": self.extractor_key,
                "params": self.params, "ref": self.ref, "counts": self.counts, "dim": self.dim,
                "seq_dim": self.seq_dim}


def assemble_features(registry: pd.DataFrame, spec: ExtractorSpec, cache_root: str,
                      store: ArtifactStore, run_id: str) -> FeatureSet:
    """The run's artifact for one extractor: the cached row of every usable clip."""
    extractor = spec.build()
    clips = clip_inputs(registry)
    wanted = pd.DataFrame({"clip_id": [c.clip_id for c in clips],
                           "media_key": [extractor.media_key(c) for c in clips]})
    table = FeatureCache(cache_root).collect(extractor.key, wanted)
    absent = set(wanted["clip_id"]) - set(table.column("clip_id").to_pylist())
    if absent:
        raise RuntimeError(f"{len(absent)} clip(s) have no {spec.name} row in the cache "
                           f"(e.g. {sorted(absent)[:3]}): a shard did not finish")
    ref = store.save(table, run_id, "features", spec.name, row_group_size=ARTIFACT_ROW_GROUP)
    statuses = pc.value_counts(table.column("status")).to_pylist()
    counts = {"clips": table.num_rows} | {d["values"]: d["counts"] for d in statuses}
    dims = [d for d in table.column("dim").to_pylist() if d is not None]
    seq_dims = [d for d in table.column("seq_dim").to_pylist() if d is not None]
    return FeatureSet(spec.name, extractor.key, extractor.params(), ref, counts,
                      dims[0] if dims else None, seq_dims[0] if seq_dims else None)


def summarize_features(specs: list[ExtractorSpec], sets: list[FeatureSet], cached: dict[str, int],
                       shard_results: list[dict]) -> dict:
    """Per extractor: clips by status, how many came from the cache, extraction rate, dims."""
    out = {}
    for spec, fs in zip(specs, sets, strict=True):
        parts = [r["extractors"][spec.name] for r in shard_results if spec.name in r["extractors"]]
        extracted = sum(p["clips"] for p in parts)
        seconds = sum(p["seconds"] for p in parts)
        out[spec.name] = {
            "clips": fs.counts.get("clips", 0), "ok": fs.counts.get("ok", 0),
            "missing": fs.counts.get("missing", 0), "error": fs.counts.get("error", 0),
            "cached": cached.get(spec.name, 0), "extracted": extracted,
            "seconds": round(seconds, 3),
            "clips_per_s": round(extracted / seconds, 1) if seconds > 0 else None,
            "dim": fs.dim, "seq_dim": fs.seq_dim, "artifact": fs.ref.path,
        }
    # Which processes ran the shards, where the task runner says (Dask workers report it).
    workers = sorted({r["worker"] for r in shard_results if "worker" in r})
    return {"extractors": out, "shards": len(shard_results), "shard_workers": workers}


# Shards and artifacts have their own content keys (extractor key + media key), so Prefect's
# input hashing is off: the runner and the frames are not meaningfully hashable anyway.
plan_features_task = task(plan_features, name="plan-features", cache_policy=NO_CACHE)
extract_shard_task = task(run_shard, name="extract-shard", cache_policy=NO_CACHE)
# The same shard, run where the task runner puts it (a Dask worker) instead of in our pool.
extract_shard_here_task = task(extract_shard_here, name="extract-shard", cache_policy=NO_CACHE)
assemble_features_task = task(assemble_features, name="assemble-features", cache_policy=NO_CACHE)
