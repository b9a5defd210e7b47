"""Catalog reads and writes of the teacher stage.

Inputs: the pool of clips (`clips`: its ids, then its rows a chunk at a time), the cache
(`teacher_answers` rows already paid for, read by key a chunk at a time).
Outputs: new `teacher_answers` rows (written in batches as they arrive, one short transaction
each, so a crash loses at most one batch of paid answers) and, at the end of the run, the
artifacts, one `teacher_outcomes` row per pool clip (read from the run's outcome artifacts), the
stage and the run's end, in one transaction.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow.csv as pacsv
import pyarrow.dataset as pads

from storage.artifacts import ArtifactRef
from storage.catalog import WRITE_MEMORY_LIMIT, Catalog, CatalogError, now
from storage.records import record_artifact, record_stage

ANSWER_COLUMNS = ["cache_key", "clip_id", "teacher", "model", "question", "media_sha256",
                  "prompt_sha256", "params_sha256", "status", "label", "scores", "reasoning",
                  "modality_shares", "raw_text", "tokens_in", "tokens_out", "latency_s", "cost_usd",
                  "error", "run_id"]
DIGEST_ROWS = 10_000                 # a teacher run's rows read and hashed at a time (answers_digest)
OUTCOME_COLUMNS = ["clip_id", "question", "teacher", "cache_key", "outcome", "from_cache", "attempts"]


def _wanted(column: str, values: Sequence[str] | None) -> pd.DataFrame:
    """The relation a query filters by (empty when it reads every row)."""
    return pd.DataFrame({column: pd.Series([] if values is None else list(values), dtype=object)})


def teacher_pool(catalog: Catalog, dataset: str, split: str = "candidate",
                 clip_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Clips of `dataset` in `split` whose media are usable, by clip_id; with `clip_ids`, only
    those of them (a chunk of the pool: a teacher run never holds the whole pool's rows)."""
    with catalog.reader() as s:
        s.register("wanted", _wanted("clip_id", clip_ids))
        return s.frame("teacher_pool", dataset=dataset, split=split, every=clip_ids is None)


def teacher_pool_ids(catalog: Catalog, dataset: str, split: str = "candidate"
                     ) -> pd.api.extensions.ExtensionArray:
    """The ids of `teacher_pool`'s clips, by clip_id, as one Arrow string array (a list of
    Python strings was ~70 bytes a clip, held all run long)."""
    with catalog.reader() as s:
        ids = s.batches("teacher_pool_ids", 1 << 16, dataset=dataset, split=split).read_all()["clip_id"]
    return pd.array(ids.combine_chunks() if ids.num_chunks else [], dtype="str")


def label_counts(catalog: Catalog, dataset: str) -> dict[str, int]:
    """How many labelled clips carry each label (for the rare-label ordering)."""
    with catalog.reader() as s:
        rows = s.frame("teacher_label_counts", dataset=dataset)
    return dict(zip(rows["label"], rows["n"].astype(int), strict=True))


def cached_answers(catalog: Catalog, teacher: str, question: str = "label",
                   keys: Sequence[str] | None = None) -> pd.DataFrame:
    """Answers already paid for by this kind of teacher (any model: the key tells them apart);
    with `keys`, only the answers of those cache keys."""
    with catalog.reader() as s:
        s.register("wanted", _wanted("cache_key", keys))
        return s.frame("teacher_cached_answers", teacher=teacher, question=question, every=keys is None)


def record_answers(catalog: Catalog, answers: pd.DataFrame) -> None:
    """Upsert a batch of answers (ANSWER_COLUMNS; scores and shares as JSON text), dated now:
    a key's cached row, if it has one, is replaced (deleted, then the new one inserted, in one
    transaction: the cache has no key index, schema v10), and of a key twice in the batch the
    later row is kept."""
    if answers.empty:
        return
    frame = answers[ANSWER_COLUMNS].drop_duplicates("cache_key", keep="last")
    frame = frame.assign(created_at=now())
    with catalog.writer() as s:
        s.register("answers", frame)
        s.run("teacher_delete_answers")
        s.run("teacher_upsert_answers")
        s.unregister("answers")


def record_teacher_run(catalog: Catalog, run_id: str, started_at: datetime,
                       outcomes: Sequence[pd.DataFrame | str | Path], refs: list[ArtifactRef],
                       summary: dict, inputs: tuple[str, ...] = ()) -> None:
    """The end of a teacher run: artifacts (with the registry they came from), per-clip outcomes
    of every question, stage and run status, in one transaction. `outcomes`: frames, or the
    Parquet files of the run's outcome artifacts (OUTCOME_COLUMNS among theirs), which DuckDB
    reads a row group at a time: a 100,000-clip pool's outcomes are never one frame here.
    DuckDB's memory is bounded to the commit (WRITE_MEMORY_LIMIT)."""
    with catalog.writer(memory_limit=WRITE_MEMORY_LIMIT) as s:
        if s.run("teacher_run_outcomes_count", run_id=run_id).fetchall()[0][0]:
            raise CatalogError(f"teacher run {run_id}'s outcomes are already recorded: they are not "
                               "recorded twice")
        for ref in refs:
            record_artifact(s, ref, inputs)
        for source in outcomes:
            rows = source[OUTCOME_COLUMNS] if isinstance(source, pd.DataFrame) else pads.dataset(
                str(source), format="parquet")
            s.register("outcomes", rows)
            s.run("teacher_insert_outcomes", run_id=run_id)
            s.unregister("outcomes")
        # A clip twice for one question (within one source or across two): the insert is undone.
        n, clip, question = s.run("teacher_run_outcome_duplicates", run_id=run_id).fetchall()[0]
        if n:
            raise ValueError(f"teacher run {run_id} has {n} clip(s) with more than one outcome for a "
                             f"question, e.g. {clip!r} ({question})")
        record_stage(s, run_id, "teacher", started_at, summary)
        s.run("finish_run", run_id=run_id, status="completed", finished_at=now(), error=None)


def run_answers(catalog: Catalog, run_id: str) -> pd.DataFrame:
    """Every pool clip of a teacher run with its outcome and answer (audit, tests)."""
    with catalog.reader() as s:
        return s.frame("teacher_run_answers", run_id=run_id)


# Answers read at a time by voting (`run_label_answers`).
ANSWER_BATCH_ROWS = 10_000


def run_label_answers(catalog: Catalog, run_id: str, rows: int = ANSWER_BATCH_ROWS) -> Iterator[pd.DataFrame]:
    """clip_id, question, status, label, scores of a teacher run's answers to the label question,
    what voting reads, in frames of about `rows` clips in no particular order (tasks.mine.
    teacher_votes sorts its votes): at 100,000 clips a frame of every answer, fetched whole and
    sorted, peaked +113 MB for its 8 MB; streamed, +40 with the connection's own +34. (The
    reasoning and raw text, most of the answers' memory, are not read.)"""
    with catalog.reader() as s:
        for batch in s.batches("teacher_run_label_answers", rows, run_id=run_id):
            yield batch.to_pandas()


def answers_digest(catalog: Catalog, run_id: str) -> str:
    """sha256 of what a teacher run answered (clip, question, outcome, status, label, scores),
    without what differs between runs that asked the same (cache hits, attempts): a content key.
    Read and hashed a batch of rows at a time, as CSV: the whole run as one frame and one CSV
    string took ~220 MB at 100,000 clips for a moment and left ~60 MB resident (18 at 25,000)
    until later steps reused it (docs/benchmarks.md, session 15)."""
    digest = hashlib.sha256()
    with catalog.reader() as s:
        batches = s.batches("teacher_run_digest_rows", DIGEST_ROWS, run_id=run_id)
        digest.update(",".join(batches.schema.names).encode() + b"\n")
        for batch in batches:
            rows = io.BytesIO()
            pacsv.write_csv(batch, rows, write_options=pacsv.WriteOptions(include_header=False))
            digest.update(rows.getbuffer())
    return digest.hexdigest()
