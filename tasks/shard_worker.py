"""The part of the features stage that runs inside worker processes (no Prefect here, so a
spawned worker starts in well under a second): extractor specs, shard jobs, and running one
shard: every extractor of the shard over its clips in batches, rows stored in the cache.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from models.extractors import ClipInput, Extractor, FeatureRow, build
from models.extractors.clip_media import ClipMedia
from models.media import DECODE_THREADS_ENV
from storage.feature_cache import FeatureCache


@dataclass(frozen=True)
class ExtractorSpec:
    name: str
    params: tuple[tuple[str, object], ...] = ()

    @classmethod
    def of(cls, name: str, params: dict | None = None) -> ExtractorSpec:
        spec = cls(name, tuple(sorted((params or {}).items())))
        spec.build()                       # validates the name and parameters now
        return spec

    def build(self) -> Extractor:
        return build(self.name, dict(self.params))

    @property
    def key(self) -> str:
        return self.build().key


@dataclass
class ShardJob:
    index: int
    specs: dict[str, ExtractorSpec]                     # extractor key -> spec
    todo: dict[str, list[ClipInput]] = field(default_factory=dict)

    @property
    def n_clips(self) -> int:
        return len({c.clip_id for clips in self.todo.values() for c in clips})


# Extractors set up in this process (a worker keeps them across shards).
_READY: dict[str, Extractor] = {}


def ready_extractor(spec: ExtractorSpec) -> Extractor:
    key = spec.key
    if key not in _READY:
        extractor = spec.build()
        extractor.setup()
        _READY[key] = extractor
    return _READY[key]


def safe_extract(extractor: Extractor, clips: list[ClipInput],
                 media: dict[str, ClipMedia]) -> list[FeatureRow]:
    """The extractor's rows; if the batch raises, clip by clip, so one bad clip fails alone."""
    try:
        return extractor.extract(clips, media)
    except Exception:                                                   # noqa: BLE001
        rows = []
        for clip in clips:
            try:
                rows += extractor.extract([clip], media)
            except Exception as exc:                                    # noqa: BLE001
                rows.append(FeatureRow.failed(clip.clip_id, f"{extractor.name} failed: "
                                                            f"{type(exc).__name__}: {exc}"))
        return rows


def row_dict(extractor: Extractor, clip: ClipInput, row: FeatureRow) -> dict:
    vector = None if row.vector is None else np.asarray(row.vector, dtype=np.float32).ravel()
    seq = None if row.sequence is None else np.asarray(row.sequence, dtype=np.float32)
    if vector is not None and not np.isfinite(vector).all():
        vector = np.nan_to_num(vector, nan=0.0, posinf=0.0, neginf=0.0)
    return {
        "clip_id": clip.clip_id, "media_key": extractor.media_key(clip),
        "extractor": extractor.name, "extractor_key": extractor.key, "status": row.status,
        "reason": row.reason, "dim": None if vector is None else len(vector), "vector": vector,
        "seq_len": None if seq is None else seq.shape[0],
        "seq_dim": None if seq is None else seq.shape[1],
        "sequence": None if seq is None else np.nan_to_num(seq).ravel(),
        "extra": json.dumps(row.extra, sort_keys=True) if row.extra else None,
    }


def extract_shard(job: ShardJob, cache_root: str, batch_size: int = 16, max_side: int = 640) -> dict:
    """Run every extractor of a shard and store its rows. Returns counts and seconds per extractor."""
    cache = FeatureCache(cache_root)
    extractors = {key: ready_extractor(spec) for key, spec in job.specs.items() if key in job.todo}
    todo_ids = {key: {c.clip_id for c in clips} for key, clips in job.todo.items()}
    clips = sorted({c.clip_id: c for cl in job.todo.values() for c in cl}.values(), key=lambda c: c.clip_id)
    rows: dict[str, list[dict]] = {key: [] for key in extractors}
    seconds = dict.fromkeys(extractors, 0.0)
    for start in range(0, len(clips), batch_size):
        if _PARENT is not None and os.getppid() != _PARENT:
            # The flow process died (killed, crashed): stop instead of working on for nobody.
            # The shards already written stay in the cache; the re-run extracts the rest.
            raise SystemExit(f"shard {job.index}: the flow process {_PARENT} is gone")
        batch = clips[start:start + batch_size]
        media = {c.clip_id: ClipMedia(c, max_side) for c in batch}
        for key, extractor in extractors.items():
            sub = [c for c in batch if c.clip_id in todo_ids[key]]
            if not sub:
                continue
            t0 = time.perf_counter()
            out = safe_extract(extractor, sub, media)
            seconds[key] += time.perf_counter() - t0
            rows[key] += [row_dict(extractor, c, r) for c, r in zip(sub, out, strict=True)]
    summary = {}
    for key, extractor in extractors.items():
        cache.write_part(key, rows[key])
        statuses = pd.Series([r["status"] for r in rows[key]], dtype="string")
        summary[extractor.name] = {"clips": len(rows[key]), "seconds": seconds[key],
                                   **{s: int((statuses == s).sum()) for s in ("ok", "missing", "error")}}
    return {"shard": job.index, "extractors": summary}


# The process that started this worker (set in spawned workers only).
_PARENT: int | None = None


def init_worker(threads: int) -> None:
    """One thread per worker for BLAS, torch (read when torch is first imported) and decoding:
    the workers already use every core between them. Remembers the parent, so that a worker
    whose flow process was killed stops at its next batch."""
    global _PARENT
    _PARENT = os.getppid()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", DECODE_THREADS_ENV):
        os.environ[var] = str(threads)
    import cv2

    cv2.setNumThreads(threads)      # OpenCV's own pool (the Haar detector runs on it)


