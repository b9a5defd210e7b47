"""Stage: ingest. Dataset folder or manifest -> clip registry artifact.

Input: a dataset (MER2025 layout, manifest CSV or a folder of videos), the label set, and the
probe cache and current registry of the workspace (both read by the flow).
Output: `<run_id>/ingest/clips.parquet` (storage.ingest.REGISTRY_COLUMNS), written only when it
differs from the dataset's current registry, and an IngestResult for the flow to record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from storage import ingest
from storage.artifacts import ArtifactRef, ArtifactStore, parquet_bytes, sha256_bytes
from storage.records import DatasetState


@dataclass
class IngestResult:
    dataset: str
    layout: str
    root: str
    labels: tuple[str, ...]
    registry: pd.DataFrame
    registry_sha256: str
    ref: ArtifactRef | None          # None when nothing changed (the current registry stands)
    probe_rows: pd.DataFrame
    summary: dict
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.ref is not None


def dataset_name(path: str | Path) -> str:
    """Default dataset name: the folder's name (a manifest's folder), made file-name safe."""
    path = Path(path).resolve()
    base = path.parent.name if path.is_file() else path.name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._-") or "dataset"


def register_clips(dataset_dir: str | Path, store: ArtifactStore, run_id: str,
                   labels: tuple[str, ...], layout: str | None = None,
                   text_column: str = "english", dataset: str | None = None,
                   probe_cache: pd.DataFrame | None = None, prior: DatasetState | None = None,
                   jobs: int = 2) -> IngestResult:
    """Scan, probe and register every clip; save the registry if it changed."""
    scanned = ingest.scan(dataset_dir, labels, layout=layout, text_column=text_column)
    dataset = dataset or dataset_name(dataset_dir)
    probes, probe_rows = ingest.probe_with_cache(ingest.media_paths(scanned), probe_cache, jobs)
    registry = ingest.build_registry(scanned, dataset, probes)
    data = parquet_bytes(registry)
    digest = sha256_bytes(data)
    unchanged = (
        prior is not None and prior.registry_sha256 == digest and prior.labels == tuple(labels)
        and prior.layout == scanned.layout and prior.root == str(scanned.root)
    )
    ref = None if unchanged else store.save(registry, run_id, "ingest", "clips", data=data)
    summary = ingest.summarize(registry) | {
        "dataset": dataset, "layout": scanned.layout, "changed": not unchanged,
        "probed_files": len(probe_rows), "warnings": scanned.warnings,
    }
    return IngestResult(dataset=dataset, layout=scanned.layout, root=str(scanned.root),
                        labels=tuple(labels), registry=registry, registry_sha256=digest,
                        ref=ref, probe_rows=probe_rows, summary=summary,
                        warnings=scanned.warnings)


# Inputs are frames and paths that Prefect cannot hash cheaply; ingest has its own content
# check (the registry's sha256), so Prefect's input cache is off here.
register_clips_task = task(register_clips, name="register-clips", cache_policy=NO_CACHE)
