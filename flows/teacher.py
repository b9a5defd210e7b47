"""Flow: ask a teacher (Gemini, replayed answers or a local model) about the unlabelled pool."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field

from storage.catalog import now
from storage.records import recorded_run, resolve_dataset
from storage.teacher_store import (
    cached_answers,
    label_counts,
    record_answers,
    record_teacher_run,
    teacher_pool,
)
from storage.workspace import Workspace, new_run_id
from tasks.teacher import (
    ENRICH_PROMPT,
    LABEL_PROMPT,
    ORDERS,
    make_teacher_task,
    query_teacher_task,
    run_limits,
    teacher_summary,
)

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class TeacherParams(BaseModel):
    """The teacher stage's settings. The API key is not one of them: it comes from the
    environment or a Prefect Secret block, so it never lands in the recorded parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workspace: Path = Field(description="workspace folder (artifact store and catalog)")
    dataset: str | None = Field(default=None, pattern=NAME,
                                description="an ingested dataset [default: the only one]")
    split: str = Field(default="candidate", pattern="^(candidate|train|test)$",
                       description="which clips to ask about")
    backend: str = Field(default="gemini", pattern="^(gemini|replay|local)$")
    answers: Path | None = Field(default=None, description="replay: JSONL answers file")
    predictions: Path | None = Field(default=None, description="Parquet: clip_id, p_<label> "
                                     "[, model]; orders the pool; the local teacher's answers")
    model: str | None = Field(default=None, description="model name [gemini: gemini-2.5-flash]")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    prompt: str = Field(default=LABEL_PROMPT, min_length=20, description="label prompt template")
    enrich_prompt: str = Field(default=ENRICH_PROMPT, min_length=20)
    media: str = Field(default="mp4", pattern="^(mp4|frames)$",
                       description="mp4 (inline or File API) or sampled frames + audio")
    n_frames: int = Field(default=8, ge=1, le=64)
    inline_max_mb: float = Field(default=18.0, gt=0, le=100)
    base_url: str | None = Field(default=None, description="API endpoint (tests, proxies)")
    timeout_s: float = Field(default=120.0, gt=0, le=3600)
    usd_per_mtok_in: float = Field(default=0.30, ge=0)
    usd_per_mtok_out: float = Field(default=2.50, ge=0)
    secret_block: str | None = Field(default=None, pattern=NAME,
                                     description="Prefect Secret block holding the API key")
    enrich: bool = Field(default=False, description="also rewrite subtitles with emotional cues")
    max_requests: int | None = Field(default=None, ge=0, le=10_000_000)
    max_cost_usd: float | None = Field(default=None, ge=0, le=100_000)
    rpm: int | None = Field(default=None, ge=1, le=100_000, description="requests per minute")
    concurrency: int = Field(default=4, ge=1, le=64)
    order: str = Field(default="auto", pattern="^(" + "|".join(ORDERS) + ")$")
    retry_attempts: int = Field(default=5, ge=1, le=20)
    retry_initial_s: float = Field(default=1.0, ge=0, le=600)
    retry_max_s: float = Field(default=60.0, ge=0, le=3600)

    def gemini_settings(self) -> dict:
        return {"temperature": self.temperature, "prompt": self.prompt,
                "enrich_prompt": self.enrich_prompt, "media": self.media, "n_frames": self.n_frames,
                "inline_max_bytes": int(self.inline_max_mb * 1e6), "base_url": self.base_url,
                "timeout_s": self.timeout_s, "usd_per_mtok_in": self.usd_per_mtok_in,
                "usd_per_mtok_out": self.usd_per_mtok_out}


@flow(name="teacher", validate_parameters=True)
def teacher_flow(params: TeacherParams) -> dict:
    ws = Workspace(params.workspace)
    run_id, started = new_run_id("teacher"), now()
    # The run is on record first (the lock holder's writes migrate an older catalog).
    with ws.exclusive(run_id), recorded_run(ws.catalog, run_id, "teacher", params.model_dump(mode="json"),
                                            flow_run.id):
        state = resolve_dataset(ws.catalog, params.dataset)
        # The pool, how rare each label is, and the teacher.
        pool = teacher_pool(ws.catalog, state.dataset, params.split)
        counts = label_counts(ws.catalog, state.dataset)
        teacher = make_teacher_task(params.backend, state.labels, model=params.model,
                                    answers=params.answers, predictions=params.predictions,
                                    secret_block=params.secret_block,
                                    gemini=params.gemini_settings())
        budget, retry = run_limits(params.max_requests, params.max_cost_usd, params.retry_attempts,
                                   params.retry_initial_s, params.retry_max_s)
        ask = partial(query_teacher_task, teacher, pool, store=ws.artifacts, run_id=run_id,
                      budget=budget, predictions=params.predictions, order=params.order,
                      label_counts=counts, rpm=params.rpm, concurrency=params.concurrency,
                      retry=retry, record=partial(record_answers, ws.catalog))
        # Labels: cache first, then the most valuable clips within the budget.
        results = [ask(cached=cached_answers(ws.catalog, teacher.kind, "label"), question="label")]
        # Context enrichment (ECMF): subtitles rewritten with the cues the model perceives.
        if params.enrich:
            results.append(ask(cached=cached_answers(ws.catalog, teacher.kind, "enrich"),
                               question="enrich"))
        summary = teacher_summary(results, budget, run_id) | {"workspace": str(ws.root),
                                                              "dataset": state.dataset}
        record_teacher_run(ws.catalog, run_id, started, [r.outcomes for r in results],
                           [r.ref for r in results], summary,
                           inputs=(state.registry_artifact_id,))
    create_markdown_artifact(key="teacher-summary", markdown=summary_markdown(summary),
                             description=f"teacher answers for {summary['dataset']}")
    return summary


def summary_markdown(summary: dict) -> str:
    lines = [f"# Teacher `{summary['teacher']}` ({summary['model']}) on `{summary['dataset']}`", "",
             "| question | pool | requests | cache hits | answered | unparseable | refused | failed "
             "| not asked | cost (USD) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for q, s in summary["questions"].items():
        lines.append(f"| {q} | {s['pool']} | {s['requests']} | {s['cache_hits']} | {s['answered']} | "
                     f"{s['unparseable']} | {s['refused']} | {s['failed']} | {s['not_asked']} | "
                     f"{s['cost_usd']:.4f} |")
    if summary["budget_exhausted"]:
        lines += ["", f"Budget exhausted: {summary['budget_exhausted']}."]
    return "\n".join(lines)
