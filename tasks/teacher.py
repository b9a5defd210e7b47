"""Stage: teacher. Pool of unlabelled clips -> teacher answers (labels, scores, reasoning).

Input: the pool of unlabelled clips (catalog `clips` of one dataset and split: its ids, and a
reader of some clips' rows, both from the flow), the label set, the answers already paid for
(the cache: a reader by cache key, from the flow), optionally a predictions frame (`clip_id`,
`p_<label>`, optional `model`) that orders the pool and that the local teacher answers from.
The pool is put to the teacher a chunk of `chunk_size` clips at a time, in priority order, with
one budget, rate limiter and map of media already asked: what is held grows with the chunk,
not with the pool.
Output: `<run_id>/teacher/answers.parquet` (one row per pool clip, in the order asked: outcome,
label, scores, reasoning), for enrichment `<run_id>/teacher/enrich_answers.parquet` (the same,
with the rewritten text) and `<run_id>/teacher/enriched_text.parquet` (clip_id, text of the
answered clips), each written a chunk at a time; new answers handed to the flow's `record`
callback in batches as they arrive; a summary.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr

from models.teachers import (
    ANSWERED,
    ENRICH,
    LABEL,
    NOT_ASKED,
    Answer,
    Budget,
    Clip,
    GeminiTeacher,
    LocalTeacher,
    RateLimiter,
    ReplayTeacher,
    RetryPolicy,
    Teacher,
)
from models.teachers.ordering import ORDERS, priority_order
from models.teachers.prompt import ENRICH_PROMPT, LABEL_PROMPT
from models.teachers.runner import Asked, RunReport, ask_pool
from storage.artifacts import ArtifactRef, ArtifactStore
from storage.catalog import CatalogError

# Re-exported for flows/teacher.py, which does not import models/ (ARCHITECTURE.md).
__all__ = ["ENRICH_PROMPT", "LABEL_PROMPT", "ORDERS", "PoolSource", "make_teacher_task",
           "query_teacher_task", "run_limits", "teacher_summary"]
KEY_VARIABLES = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
log = logging.getLogger("mersemi.teacher")
STATUSES = ("answered", "unparseable", "refused", "failed", "not_asked")
# Pool clips put to the teacher at a time: their rows, Clips, cache entries, answers and outcome
# rows are what a run holds (~3.5 KB a clip at 100,000 when the whole pool was held at once).
CHUNK_CLIPS = 10_000
# The outcome artifacts' columns (an explicit schema: a chunk where nobody answered has only
# None in its answer columns, and the file's types must not depend on which chunk came first).
OUTCOME_SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("question", pa.string()), ("teacher", pa.string()),
    ("model", pa.string()), ("cache_key", pa.string()), ("outcome", pa.string()),
    ("from_cache", pa.bool_()), ("attempts", pa.int32()), ("label", pa.string()),
    ("scores", pa.string()), ("reasoning", pa.string()), ("text", pa.string())])
TEXT_SCHEMA = pa.schema([("clip_id", pa.string()), ("text", pa.string())])


@dataclass
class TeacherResult:
    question: str
    outcomes: ArtifactRef            # one row per pool clip (storage.teacher_store.OUTCOME_COLUMNS+)
    ref: ArtifactRef                 # what the question produced: the answers, or the enriched text
    summary: dict

    @property
    def refs(self) -> list[ArtifactRef]:
        return [self.outcomes] if self.ref == self.outcomes else [self.outcomes, self.ref]


@dataclass(frozen=True)
class PoolSource:
    """A teacher's pool as its clip ids and a reader of some of their rows (Clip fields; the
    flow's reader reads the catalog: storage.teacher_store.teacher_pool with `clip_ids`), so
    that a run holds a chunk of the pool's rows at a time."""

    ids: Sequence[str]                  # a list, or an Arrow string array (storage.teacher_pool_ids)
    rows: Callable[[Sequence[str]], pd.DataFrame] = field(repr=False)

    @classmethod
    def of(cls, frame: pd.DataFrame) -> PoolSource:
        """A pool whose rows are already in memory (a frame with a row per clip)."""
        return cls(frame["clip_id"].tolist(),
                   lambda ids: frame[frame["clip_id"].isin(list(ids))].reset_index(drop=True))


def resolve_api_key(secret_block: str | None = None) -> SecretStr | None:
    """The Gemini key: a named Prefect Secret block, else $GEMINI_API_KEY, else $GOOGLE_API_KEY."""
    if secret_block:
        from prefect.blocks.system import Secret

        return SecretStr(str(Secret.load(secret_block).get()))
    for name in KEY_VARIABLES:
        if os.environ.get(name):
            return SecretStr(os.environ[name])
    return None


def run_limits(max_requests: int | None, max_cost_usd: float | None, attempts: int,
               initial_delay_s: float, max_delay_s: float) -> tuple[Budget, RetryPolicy]:
    """The run's budget (shared by every question) and retry policy."""
    return Budget(max_requests, max_cost_usd), RetryPolicy(attempts, initial_delay_s, max_delay_s)


def make_teacher(backend: str, labels: tuple[str, ...], model: str | None = None,
                 answers: Path | None = None, predictions: Path | None = None,
                 secret_block: str | None = None, gemini: Mapping | None = None) -> Teacher:
    """A fitted teacher of the chosen backend; `gemini`: GeminiTeacher settings."""
    if backend == "replay":
        if answers is None:
            raise ValueError("the replay teacher needs --answers PATH (a JSONL file)")
        return ReplayTeacher(answers, model=model).fit(labels)
    if backend == "local":
        if predictions is None:
            raise ValueError("the local teacher needs --predictions PATH (clip_id, p_<label> columns)")
        return LocalTeacher(predictions, model=model or f"local:{Path(predictions).stem}").fit(labels)
    if backend == "gemini":
        settings = dict(gemini or {}) | ({"model": model} if model else {})
        return GeminiTeacher(api_key=resolve_api_key(secret_block), **settings).fit(labels)
    raise ValueError(f"unknown teacher backend {backend!r}: gemini, replay or local")


def pool_clips(pool: pd.DataFrame) -> list[Clip]:
    """Catalog rows (storage.teacher_store.teacher_pool) as Clips."""
    fields = Clip.__dataclass_fields__
    rows = pool.astype(object).where(pool.notna(), None).to_dict("records")
    return [Clip(**{k: v for k, v in row.items() if k in fields}) for row in rows]


def _json_or_none(text) -> dict | None:
    return json.loads(text) if isinstance(text, str) else None


def cache_from_frame(cached: pd.DataFrame | None) -> dict[str, Answer]:
    """Cached catalog rows (storage.teacher_store.cached_answers) as Answers by cache key."""
    if cached is None or cached.empty:
        return {}
    out = {}
    for row in cached.astype(object).where(cached.notna(), None).to_dict("records"):
        out[row["cache_key"]] = Answer(
            status=row["status"], label=row["label"], scores=_json_or_none(row["scores"]) or {},
            reasoning=row["reasoning"], modality_shares=_json_or_none(row["modality_shares"]),
            raw_text=row["raw_text"], tokens_in=row["tokens_in"], tokens_out=row["tokens_out"],
            latency_s=row["latency_s"], cost_usd=row["cost_usd"], error=row["error"])
    return out


def answer_rows(asked: list[Asked], teacher: Teacher, question: str, run_id: str) -> pd.DataFrame:
    """New answers as `teacher_answers` rows (storage.teacher_store.ANSWER_COLUMNS)."""
    def as_json(value: dict | None) -> str | None:
        return json.dumps(value, sort_keys=True) if value else None

    rows = []
    for a in asked:
        ans = a.answer
        rows.append({
            "cache_key": a.key, "clip_id": a.clip.clip_id, "teacher": teacher.kind,
            "model": teacher.model_, "question": question, "media_sha256": a.clip.media_sha256,
            "prompt_sha256": teacher.prompt_sha256(question), "params_sha256": teacher.params_sha256_,
            "status": ans.status, "label": ans.label,
            "scores": as_json(ans.scores), "reasoning": ans.reasoning,
            "modality_shares": as_json(ans.modality_shares),
            "raw_text": ans.raw_text, "tokens_in": ans.tokens_in, "tokens_out": ans.tokens_out,
            "latency_s": ans.latency_s, "cost_usd": ans.cost_usd, "error": ans.error, "run_id": run_id})
    frame = pd.DataFrame(rows)
    for col in ("tokens_in", "tokens_out"):
        if col in frame:
            frame[col] = frame[col].astype("Int64")
    return frame


def outcome_frame(report: RunReport, teacher: Teacher, question: str) -> pd.DataFrame:
    """One row per clip of the report (in its order): outcome, where it came from, and the
    answer when there is one. Built a column at a time (a dict per clip is ~1 KB)."""
    asked, n = report.asked, len(report.asked)

    def answered(get) -> list:
        return [get(a.answer) if a.answer is not None else None for a in asked]

    columns = {
        "clip_id": [a.clip.clip_id for a in asked], "question": [question] * n,
        "teacher": [teacher.kind] * n, "model": [teacher.model_] * n,
        "cache_key": [a.key for a in asked], "outcome": [a.outcome for a in asked],
        "from_cache": np.array([a.from_cache for a in asked], dtype=bool),
        "attempts": np.array([a.attempts for a in asked], dtype=np.int32),
        "label": answered(lambda ans: ans.label),
        "scores": answered(lambda ans: json.dumps(ans.scores, sort_keys=True) if ans.scores else None),
        "reasoning": answered(lambda ans: ans.reasoning),
        "text": answered(lambda ans: ans.raw_text) if question == ENRICH else [None] * n,
    }
    frame = pd.DataFrame(columns) if n else pd.DataFrame(columns=list(columns))
    return frame.astype({"attempts": "int32", "from_cache": "bool"})


@dataclass
class Tally:
    """A question's figures over the chunks of its pool."""

    pool: int = 0
    cache_hits: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    not_asked_sample: list[str] = field(default_factory=list)

    def add(self, report: RunReport) -> None:
        self.pool += len(report.asked)
        self.cache_hits += sum(a.from_cache for a in report.asked)
        for status, n in report.counts.items():
            self.counts[status] = self.counts.get(status, 0) + n
        room = 20 - len(self.not_asked_sample)
        if room > 0:
            self.not_asked_sample += [a.clip.clip_id for a in report.asked if a.outcome == NOT_ASKED][:room]


def summarize(tally: Tally, teacher: Teacher, question: str, requests: int, cost_usd: float,
              budget: Budget, wall_s: float) -> dict:
    counts = {s: tally.counts.get(s, 0) for s in STATUSES}
    return {"question": question, "teacher": teacher.kind, "model": teacher.model_,
            "pool": tally.pool, "requests": requests, "cache_hits": tally.cache_hits, **counts,
            "cost_usd": round(cost_usd, 6), "budget_exhausted": budget.exhausted,
            "not_asked_sample": tally.not_asked_sample, "wall_s": round(wall_s, 3)}


def query_teacher(teacher: Teacher, pool: pd.DataFrame | PoolSource,
                  cached: pd.DataFrame | Callable[[Sequence[str]], pd.DataFrame] | None,
                  store: ArtifactStore, run_id: str, budget: Budget, question: str = LABEL,
                  predictions: pd.DataFrame | Path | None = None, order: str = "auto",
                  label_counts: Mapping[str, int] | None = None, rpm: int | None = None,
                  concurrency: int = 4, retry: RetryPolicy | None = None,
                  record: Callable[[pd.DataFrame], None] | None = None,
                  sleep: Callable[[float], None] = time.sleep,
                  chunk_size: int = CHUNK_CLIPS) -> TeacherResult:
    """Ask `teacher` about every pool clip not in the cache, most valuable first, within the
    budget; save the per-clip outcomes (and, for `enrich`, the rewritten subtitles).

    The pool goes to the teacher `chunk_size` clips at a time, in priority order: a chunk's
    rows are read (`pool`: a PoolSource, or a frame of every row), then its cache entries
    (`cached`: a function of the chunk's cache keys that reads the cache, or a frame of the
    whole cache), then it is asked, and its outcome rows are written to the artifact. A function
    reads the cache as the run goes, so a retried task sees what its failed attempt recorded
    and pays for no answer twice."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
    started, requests_before, cost_before = time.monotonic(), budget.requests, budget.cost_usd
    source = pool if isinstance(pool, PoolSource) else PoolSource.of(pool)
    if isinstance(predictions, Path | str):
        predictions = pd.read_parquet(predictions)
    # Each clip once, in the pool's order; an Arrow array stays one (no Python string per clip).
    ids = pd.unique(pd.array(source.ids, dtype="str", copy=False))
    order_ids = priority_order(ids, predictions, teacher.labels_, order, label_counts)
    # A whole cache is made Answers once; a reader, for each chunk's keys (ask_pool calls it).
    cache = (lambda keys: cache_from_frame(cached(keys))) if callable(cached) else cache_from_frame(cached)
    limiter, asked_before, tally = RateLimiter(rpm, sleep=sleep), {}, Tally()

    def sink(batch: list[Asked]) -> None:
        record(answer_rows(batch, teacher, question, run_id))

    def chunks() -> Iterator[pd.DataFrame]:
        for start in range(0, len(order_ids), chunk_size):
            ids = order_ids[start:start + chunk_size]
            clips = {c.clip_id: c for c in pool_clips(source.rows(ids))}
            missing = [i for i in ids if i not in clips]
            if missing:
                raise ValueError(f"pool clip {missing[0]!r} has no row to show the teacher "
                                 f"({len(missing)} of the chunk's {len(ids)} clips): it is not in "
                                 "the pool's dataset and split, or its media are not usable")
            report = ask_pool(teacher, [clips[i] for i in ids], cache, question, budget=budget,
                              concurrency=concurrency, retry=retry,
                              sink=sink if record is not None else None, sleep=sleep, seed=start,
                              limiter=limiter, asked_before=asked_before, warn=False)
            tally.add(report)
            yield outcome_frame(report, teacher, question)

    schema = OUTCOME_SCHEMA
    if question != ENRICH:                                  # a label's text is not its answer
        schema = schema.remove(schema.names.index("text"))
    outcomes = store.save_frames((f[schema.names] for f in chunks()), run_id, "teacher",
                                 "enrich_answers" if question == ENRICH else "answers", schema=schema)
    if budget.exhausted:                                    # once for the pool, not per chunk
        log.warning("teacher budget exhausted (%s): %d clips not asked (%s)", budget.exhausted,
                    tally.counts.get(NOT_ASKED, 0), question)
    ref = outcomes
    if question == ENRICH:
        ref = store.save_frames(answered_texts(store.path(outcomes)), run_id, "teacher", "enriched_text",
                                schema=TEXT_SCHEMA)
    summary = summarize(tally, teacher, question, budget.requests - requests_before,
                        budget.cost_usd - cost_before, budget, time.monotonic() - started) | {
        "order": order, "artifact": ref.artifact_id}
    return TeacherResult(question, outcomes, ref, summary)


def answered_texts(outcomes: Path) -> Iterator[pd.DataFrame]:
    """clip_id and text of the answered clips of an enrichment's outcome file, a row group at a
    time."""
    file = pq.ParquetFile(outcomes)
    for i in range(file.num_row_groups):
        frame = file.read_row_group(i, columns=["clip_id", "outcome", "text"]).to_pandas()
        texts = frame.loc[frame["outcome"] == ANSWERED, ["clip_id", "text"]].reset_index(drop=True)
        if len(texts):
            yield texts


def teacher_summary(results: list[TeacherResult], budget: Budget, run_id: str) -> dict:
    """The run's summary: the label question's figures at the top, every question under its name."""
    first = results[0].summary
    return {k: v for k, v in first.items() if k != "question"} | {
        "run_id": run_id, "requests": budget.requests, "cost_usd": round(budget.cost_usd, 6),
        "budget_exhausted": budget.exhausted,
        "questions": {r.question: r.summary for r in results}}


# Every query-teacher task run carries this tag: a tag concurrency limit on it caps how many
# run at once across all flow runs on the server (one API key's quota is shared by them all).
TEACHER_TAG = "mersemi-teacher"
TRANSIENT = (OSError, TimeoutError, CatalogError)


def transient_failure(task, task_run, state) -> bool:
    """Retry a teacher task only for what may pass (I/O, a busy catalog), not for bad input;
    requests already retry on their own (408/429/5xx) inside the task."""
    try:
        state.result()
    except TRANSIENT:
        return True
    except Exception:                                                   # noqa: BLE001
        return False
    return False


# Inputs are frames, a client and callbacks that Prefect cannot hash; the teacher cache is the
# catalog's (keyed by media, prompt, model and parameters), so Prefect's cache is off here.
make_teacher_task = task(make_teacher, name="make-teacher", cache_policy=NO_CACHE)
query_teacher_task = task(query_teacher, name="query-teacher", cache_policy=NO_CACHE, tags=[TEACHER_TAG],
                          retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=transient_failure)
