"""What the flow process records in the catalog: runs, stages, artifacts, datasets, clips.

Each function is one short write transaction, so audit readers get their turn between them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import pandas as pd
import pyarrow as pa

from storage.artifacts import ArtifactRef, ArtifactStore
from storage.catalog import WRITE_MEMORY_LIMIT, Catalog, CatalogError, Session, now
from storage.feature_cache import ParquetBatches
from storage.ingest import LEARNING_COLUMNS

RELEASE = "0.1.0"
PACKAGES = ("flows", "tasks", "models", "storage")


@lru_cache(maxsize=1)
def code_version() -> str:
    """The release and a hash of the project's source (Python and SQL): a run's results depend
    on both, so cache keys include it and a code change invalidates cached runs."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*")):
            if path.suffix in (".py", ".sql") and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(root)).encode())
                digest.update(path.read_bytes())
    return f"{RELEASE}+{digest.hexdigest()[:12]}"


def content_key(command: str, params: dict, inputs: dict) -> str:
    """sha256 of what a run's results depend on: command, parameters, input hashes, code."""
    blob = json.dumps({"command": command, "params": params, "inputs": inputs, "code": code_version()},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def keyed_run(catalog: Catalog, command: str, cache_key: str) -> dict | None:
    """The newest run of `command` with this content key: run_id, status, started_at."""
    with catalog.reader() as s:
        rows = s.records("keyed_run", command=command, cache_key=cache_key)
    return rows[0] if rows else None


def stage_summaries(catalog: Catalog, run_id: str, stage: str) -> list[dict]:
    """The recorded stage rows of a run (round order), summaries parsed."""
    with catalog.reader() as s:
        rows = s.records("run_stage_summaries", run_id=run_id, stage=stage)
    for row in rows:
        row["summary"] = json.loads(row["summary"]) if isinstance(row["summary"], str) else row["summary"]
    return rows


def artifact_hashes(catalog: Catalog, artifact_ids: Sequence[str]) -> dict[str, str]:
    with catalog.reader() as s:
        rows = s.records("artifact_hashes", artifact_ids=list(artifact_ids))
    return {r["artifact_id"]: r["sha256"] for r in rows}


def start_run(catalog: Catalog, run_id: str, command: str, params: dict,
              flow_run_id: str | None = None, cache_key: str | None = None) -> None:
    with catalog.writer() as s:
        s.run("insert_run", run_id=run_id, command=command, started_at=now(), params=params,
              code_version=code_version(), flow_run_id=flow_run_id, cache_key=cache_key)


def finish_run(catalog: Catalog, run_id: str, status: str, error: str | None = None) -> None:
    with catalog.writer() as s:
        s.run("finish_run", run_id=run_id, status=status, finished_at=now(), error=error)


def record_stage(s: Session, run_id: str, stage: str, started_at: datetime, summary: dict,
                 status: str = "completed", round_: int = 0) -> None:
    s.run("insert_stage", run_id=run_id, stage=stage, round=round_, status=status,
          started_at=started_at, finished_at=now(), summary=summary)


def record_artifact(s: Session, ref: ArtifactRef, inputs: Iterable[str] = ()) -> None:
    s.run("insert_artifact", **ref.as_dict(), created_at=now())
    for input_id in inputs:
        s.run("insert_artifact_input", artifact_id=ref.artifact_id, input_artifact_id=input_id)


@dataclass(frozen=True)
class DatasetState:
    dataset: str
    root: str
    layout: str
    labels: tuple[str, ...]
    registry_artifact_id: str
    registry_sha256: str


def dataset_state(catalog: Catalog, dataset: str) -> DatasetState | None:
    """The dataset's current registry, or None when it was never ingested."""
    if not catalog.path.exists():
        return None
    with catalog.reader() as s:
        rows = s.frame("get_dataset", dataset=dataset)
    if rows.empty:
        return None
    r = rows.iloc[0]
    return DatasetState(r["dataset"], r["root"], r["layout"], tuple(json.loads(r["labels"])),
                        r["registry_artifact_id"], r["registry_sha256"])


def learning_registry(store: ArtifactStore, state: DatasetState) -> pd.DataFrame:
    """The dataset's current registry, only the columns the learning stages read
    (`LEARNING_COLUMNS`)."""
    return store.load(f"{state.registry_artifact_id}.parquet", columns=LEARNING_COLUMNS)


def probe_cache(catalog: Catalog) -> pd.DataFrame | None:
    if not catalog.path.exists():
        return None
    with catalog.reader() as s:
        return s.frame("get_media_files")


def record_probes(catalog: Catalog, probe_rows: pd.DataFrame) -> None:
    """Refresh the probe cache (files whose size or mtime changed but whose content did not)."""
    with catalog.writer() as s:
        _upsert_probes(s, probe_rows)


def _upsert_probes(s: Session, probe_rows: pd.DataFrame) -> None:
    if len(probe_rows):
        s.register("probed", probe_rows)
        s.run("upsert_media_files")
        s.unregister("probed")


def record_ingest(catalog: Catalog, run_id: str, started_at: datetime, params: dict,
                  dataset: str, root: str, layout: str, labels: Sequence[str], ref: ArtifactRef,
                  registry: pd.DataFrame, probe_rows: pd.DataFrame, summary: dict,
                  flow_run_id: str | None = None) -> None:
    """Record an ingest run whose registry changed, and make that registry the dataset's
    current one, in one transaction: a crash leaves the catalog as it was before the run.

    An ingest that changes nothing is not recorded at all, so re-ingesting is idempotent.
    """
    with catalog.writer() as s:
        s.run("insert_run", run_id=run_id, command="ingest", started_at=started_at,
              params=params, code_version=code_version(), flow_run_id=flow_run_id, cache_key=None)
        record_artifact(s, ref)
        s.register("registry", registry)
        s.run("upsert_clips", dataset=dataset, run_id=run_id)
        s.run("mark_removed_clips", dataset=dataset, run_id=run_id)
        s.unregister("registry")
        _upsert_probes(s, probe_rows)
        s.run("upsert_dataset", dataset=dataset, root=root, layout=layout, labels=list(labels),
              registry_artifact_id=ref.artifact_id, registry_sha256=ref.sha256,
              updated_at=now())
        record_stage(s, run_id, "ingest", started_at, summary)
        s.run("finish_run", run_id=run_id, status="completed", finished_at=now(), error=None)


def list_datasets(catalog: Catalog) -> list[dict]:
    if not catalog.path.exists():
        return []
    with catalog.reader() as s:
        return s.records("list_datasets")


def resolve_dataset(catalog: Catalog, name: str | None) -> DatasetState:
    """The named dataset, or the workspace's only one; a clear error otherwise."""
    names = [d["dataset"] for d in list_datasets(catalog)]
    if not names:
        raise ValueError(f"no dataset is ingested in {catalog.path.parent}: run `mersemi ingest` first")
    if name is None:
        if len(names) > 1:
            raise ValueError(f"the workspace holds several datasets ({', '.join(names)}): "
                             "choose one with --dataset")
        name = names[0]
    state = dataset_state(catalog, name)
    if state is None:
        raise ValueError(f"no dataset {name!r} in the workspace (it holds {', '.join(names)})")
    return state


def record_feature_sets(catalog: Catalog, run_id: str, started_at: datetime, dataset: str,
                        registry_artifact_id: str, feature_sets: list[dict], summary: dict) -> None:
    """Record a features run's artifacts (with the registry as their input), feature sets,
    stage and the run's end, in one transaction: a run killed before it is recorded leaves no
    feature set behind, and one killed after it is finished (the next writer does not find a
    run left `running` whose feature sets are the newest).

    Each item of `feature_sets`: ref (ArtifactRef), extractor, extractor_key, params, counts,
    dim, seq_dim.
    """
    with catalog.writer() as s:
        for fs in feature_sets:
            ref, counts = fs["ref"], fs["counts"]
            record_artifact(s, ref, inputs=[registry_artifact_id])
            s.run("insert_feature_set", run_id=run_id, dataset=dataset, extractor=fs["extractor"],
                  extractor_key=fs["extractor_key"], params=fs["params"],
                  artifact_id=ref.artifact_id, n_clips=counts.get("clips", 0),
                  n_ok=counts.get("ok", 0), n_missing=counts.get("missing", 0),
                  n_error=counts.get("error", 0), dim=fs["dim"], seq_dim=fs["seq_dim"],
                  created_at=now())
        record_stage(s, run_id, "features", started_at, summary)
        s.run("finish_run", run_id=run_id, status="completed", finished_at=now(), error=None)


def latest_feature_sets(catalog: Catalog, dataset: str) -> list[dict]:
    with catalog.reader() as s:
        return s.records("latest_feature_sets", dataset=dataset)


def feature_frames(catalog: Catalog, store, dataset: str, names: Sequence[str] | None = None,
                   columns: Sequence[str] | None = None) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The newest feature set of each extractor (or of `names`) as frames, and their artifact ids.
    `columns`: only these (training reads `TRAINING_COLUMNS`)."""
    sets = _feature_sets(catalog, dataset, names)
    return dict(FeatureFrames(store.root, sets, columns)), [s["artifact_id"] for s in sets]


class FeatureFrames(Mapping):
    """The newest feature set of each extractor, by extractor name. Eager (`stream=False`): each
    is read as a frame when first asked for and held until `drop(name)`, so a reader that needs
    one at a time never holds every frame at once. Streamed: each is its artifact's record
    batches (`ParquetBatches`), which tasks/train.build_bundle copies a row group at a time
    into the expert's matrix: the file is never held whole (at 100,000 clips a frame of the
    features is 2.5x their matrix, a table 1x beside it)."""

    def __init__(self, root: Path, sets: Sequence[dict], columns: Sequence[str] | None = None,
                 stream: bool = False):
        self._paths = {s["extractor"]: root / s["path"] for s in sets}
        self._columns = None if columns is None else list(columns)
        self._stream = stream
        self._loaded: dict[str, pd.DataFrame] = {}

    def __getitem__(self, name: str) -> pd.DataFrame | ParquetBatches:
        if self._stream:
            return ParquetBatches(self._paths[name], self._columns)
        if name not in self._loaded:
            self._loaded[name] = pd.read_parquet(self._paths[name], columns=self._columns)
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def drop(self, name: str) -> None:
        """Let the frame go (read again if asked for again)."""
        self._loaded.pop(name, None)


def lazy_feature_frames(catalog: Catalog, store, dataset: str, columns: Sequence[str] | None = None
                        ) -> tuple[FeatureFrames, list[str]]:
    """The newest feature sets, each streamed from its artifact when used (`FeatureFrames`), for
    tasks/train.build_bundle; and their artifact ids."""
    sets = _feature_sets(catalog, dataset, None)
    return FeatureFrames(store.root, sets, columns, stream=True), [s["artifact_id"] for s in sets]


def feature_set_ids(catalog: Catalog, dataset: str, names: Sequence[str] | None = None) -> list[str]:
    """The artifact ids `feature_frames` would load, without loading them (for content keys)."""
    return [s["artifact_id"] for s in _feature_sets(catalog, dataset, names)]


def _feature_sets(catalog: Catalog, dataset: str, names: Sequence[str] | None) -> list[dict]:
    sets = latest_feature_sets(catalog, dataset)
    if names:
        sets = [s for s in sets if s["extractor"] in names]
    if not sets:
        raise ValueError(f"no features for dataset {dataset!r}: run `mersemi features` first")
    return sets


def record_stage_run(catalog: Catalog, run_id: str, stage: str, started_at: datetime, refs: list[ArtifactRef],
                     inputs: Sequence[str], summary: dict, metrics: Sequence[tuple[str, str, float]] = ()
                     ) -> None:
    """A stage's artifacts (with their inputs), metrics (name, scope, value) and summary, then
    the run's end, in one transaction."""
    with catalog.writer() as s:
        for ref in refs:
            record_artifact(s, ref, inputs=inputs)
        for name, scope, value in metrics:
            s.run("insert_metric", run_id=run_id, stage=stage, round=0, name=name, scope=scope,
                  value=float(value), recorded_at=now())
        record_stage(s, run_id, stage, started_at, summary)
        s.run("finish_run", run_id=run_id, status="completed", finished_at=now(), error=None)


def latest_stage_run(catalog: Catalog, stage: str, dataset: str) -> tuple[str, list[dict]] | None:
    """(run id, artifacts) of the newest completed run of `stage` for `dataset`."""
    with catalog.reader() as s:
        rows = s.records("latest_stage_run", stage=stage, dataset=dataset)
        if not rows:
            return None
        return rows[0]["run_id"], s.records("run_artifacts", run_id=rows[0]["run_id"], stage=stage)


# A round's decisions as the insert reads them (`record_round`), whatever types a frame has.
DECISION_SCHEMA = pa.schema([("clip_id", pa.large_string()), ("decision", pa.large_string()),
                             ("label", pa.large_string()), ("confidence", pa.float64()),
                             ("reason", pa.large_string()), ("votes", pa.large_string()),
                             ("new_clip", pa.bool_())])


def record_round(catalog: Catalog, run_id: str, round_: int, started_at: datetime,
                 decisions: pd.DataFrame | Iterable[pd.DataFrame], decided_by: str, summary: dict,
                 metrics: Sequence[tuple[str, str, float]] = (), refs: Sequence[ArtifactRef] = (),
                 inputs: Sequence[str] = ()) -> None:
    """One mining round: its artifacts, every pool clip's decision, metrics and summary, in one
    transaction. `decisions`: a frame (clip_id, decision, label, confidence, reason, votes as
    JSON text, optionally `new_clip` (tasks.mine.mark_new; without it, recorded unknown)), or
    frames of them (`tasks.mine.RoundResult.records`), which one insert reads as a stream, a
    frame at a time: no frame of every clip's reasons and votes is held, here or by DuckDB (a
    frame registered inside a transaction stays referenced until the commit, so one insert per
    frame held them all), and DuckDB's memory is bounded to the commit (WRITE_MEMORY_LIMIT).
    A clip decided twice rolls the round back."""
    frames = [decisions] if isinstance(decisions, pd.DataFrame) else decisions

    def batches() -> Iterator[pa.RecordBatch]:
        for frame in frames:
            if "new_clip" not in frame:
                unknown = pd.Series([None] * len(frame), dtype="boolean", index=frame.index)
                frame = frame.assign(new_clip=unknown)
            yield pa.RecordBatch.from_pandas(frame[DECISION_SCHEMA.names], schema=DECISION_SCHEMA,
                                             preserve_index=False)

    with catalog.writer(memory_limit=WRITE_MEMORY_LIMIT) as s:
        if s.run("round_decisions_count", run_id=run_id, round=round_).fetchall()[0][0]:
            raise CatalogError(f"round {round_} of run {run_id} is already recorded: its decisions "
                               "are not recorded twice")
        for ref in refs:
            record_artifact(s, ref, inputs=inputs)
        s.register("decisions", pa.RecordBatchReader.from_batches(DECISION_SCHEMA, batches()))
        s.run("insert_decisions", run_id=run_id, round=round_, decided_by=decided_by, decided_at=now())
        s.unregister("decisions")
        n, clip = s.run("round_decision_duplicates", run_id=run_id, round=round_).fetchall()[0]
        if n:
            raise ValueError(f"round {round_} of run {run_id} decides {n} clip(s) more than once, "
                             f"e.g. {clip!r}: a clip is decided once per round")
        s.run("insert_round_counts", run_id=run_id, round=round_)
        for name, scope, value in metrics:
            s.run("insert_metric", run_id=run_id, stage="mine", round=round_, name=name, scope=scope,
                  value=float(value), recorded_at=now())
        record_stage(s, run_id, "mine", started_at, summary, round_=round_)


@contextmanager
def recorded_run(catalog: Catalog, run_id: str, command: str, params: dict,
                 flow_run_id: str | None = None, cache_key: str | None = None,
                 resume: bool = False) -> Iterator[None]:
    """A run on record from its start (or, with `resume`, a broken run taken up again); if the
    block raises, it is finished as failed with the error (the block finishes a successful run
    itself, in its last write transaction)."""
    if resume:
        with catalog.writer() as s:
            s.run("resume_run", run_id=run_id, flow_run_id=flow_run_id)
    else:
        start_run(catalog, run_id, command, params, flow_run_id, cache_key)
    try:
        yield
    except BaseException as exc:
        finish_run(catalog, run_id, "failed", error=f"{type(exc).__name__}: {exc}"[:2000])
        raise


def mined_clips(catalog: Catalog, dataset: str, run_id: str) -> pd.api.extensions.ExtensionArray:
    """Clips of `dataset` that an earlier (other) mining run has decided, as one Arrow string
    array (a set of Python strings was ~100 bytes a clip, held for the whole run)."""
    with catalog.reader() as s:
        return pd.array(s.frame("mined_clips", dataset=dataset, run_id=run_id)["clip_id"], dtype="str")


def accepted_pseudo_labels(catalog: Catalog, run_id: str) -> pd.DataFrame:
    """clip_id, label, confidence, round of the clips a mining run accepted."""
    with catalog.reader() as s:
        return s.frame("accepted_pseudo_labels", run_id=run_id)


def record_finalize(catalog: Catalog, run_id: str, started_at: datetime, final: pd.DataFrame,
                    changes: pd.DataFrame, flags: pd.DataFrame, refs: Sequence[ArtifactRef],
                    inputs: Sequence[str], summary: dict, metrics: Sequence[tuple[str, str, float]] = ()
                    ) -> None:
    """A finalize run: artifacts, final labels, every rule change, label flags, metrics, summary
    and the run's end, in one transaction."""
    with catalog.writer() as s:
        for ref in refs:
            record_artifact(s, ref, inputs=inputs)
        decided = now()
        for name, frame, query, stamp in (("final", final, "insert_final_predictions", "decided_at"),
                                          ("changes", changes, "insert_rule_changes", "decided_at"),
                                          ("flags", flags, "insert_label_flags", "flagged_at")):
            s.register(name, frame)
            s.run(query, run_id=run_id, **{stamp: decided})
            s.unregister(name)
        for name, scope, value in metrics:
            s.run("insert_metric", run_id=run_id, stage="finalize", round=0, name=name, scope=scope,
                  value=float(value), recorded_at=decided)
        record_stage(s, run_id, "finalize", started_at, summary)
        s.run("finish_run", run_id=run_id, status="completed", finished_at=now(), error=None)


def mine_run(catalog: Catalog, dataset: str, run_id: str | None = None) -> str:
    """The newest completed mining run of `dataset`, or check that `run_id` is one."""
    with catalog.reader() as s:
        rows = s.records("mine_runs", dataset=dataset, run_id=run_id)
    done = [r for r in rows if r["status"] == "completed"]
    if run_id and not rows:
        raise ValueError(f"{run_id!r} is not a mining run of dataset {dataset!r}")
    if run_id and not done:
        raise ValueError(f"mining run {run_id} is {rows[0]['status']}, not completed")
    if not done:
        raise ValueError(f"dataset {dataset!r} has no completed mining run: run `mersemi mine` first")
    return done[0]["run_id"]
