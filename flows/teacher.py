"""Flow: ask a teacher (Gemini, replayed answers or a local model) about the unlabelled pool."""

from __future__ import annotations

from functools import partial

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from flows.faults import checkpoint
from flows.params import TeacherParams
from flows.runners import ensure_tag_limit
from storage.catalog import now
from storage.records import recorded_run, resolve_dataset
from storage.teacher_store import (
    cached_answers,
    label_counts,
    record_answers,
    record_teacher_run,
    teacher_pool,
    teacher_pool_ids,
)
from storage.workspace import Workspace, new_run_id
from tasks.teacher import (
    TEACHER_TAG,
    PoolSource,
    make_teacher_task,
    query_teacher_task,
    run_limits,
    teacher_summary,
)


@flow(name="teacher", validate_parameters=True)
def teacher_flow(params: TeacherParams) -> dict:
    ws = Workspace(params.workspace)
    run_id, started = new_run_id("teacher"), now()
    # The run is on record first (the lock holder's writes migrate an older catalog).
    with ws.exclusive(run_id), recorded_run(ws.catalog, run_id, "teacher", params.model_dump(mode="json"),
                                            flow_run.id):
        state = resolve_dataset(ws.catalog, params.dataset)
        # The pool (its ids; the task reads its rows a chunk at a time), how rare each label is,
        # and the teacher.
        pool = PoolSource(teacher_pool_ids(ws.catalog, state.dataset, params.split),
                          partial(teacher_pool, ws.catalog, state.dataset, params.split))
        counts = label_counts(ws.catalog, state.dataset)
        teacher = make_teacher_task(params.backend, state.labels, model=params.model,
                                    answers=params.answers, predictions=params.predictions,
                                    secret_block=params.secret_block,
                                    gemini=params.gemini_settings())
        budget, retry = run_limits(params.max_requests, params.max_cost_usd, params.retry_attempts,
                                   params.retry_initial_s, params.retry_max_s)
        # One API quota, shared by every flow run on the server: teacher tasks queue on a tag limit.
        limit = ensure_tag_limit(TEACHER_TAG, params.task_concurrency)
        # quote(): Prefect would otherwise walk the pool's 100,000s of ids for futures.
        ask = partial(query_teacher_task, teacher, quote(pool), store=ws.artifacts, run_id=run_id,
                      budget=budget, predictions=params.predictions, order=params.order,
                      label_counts=counts, rpm=params.rpm, concurrency=params.concurrency,
                      retry=retry, record=partial(record_answers, ws.catalog))
        # Labels: cache first, then the most valuable clips within the budget.
        # (The cache is read a chunk at a time as the task goes: a retried attempt pays for
        # nothing twice.)
        results = [ask(cached=partial(cached_answers, ws.catalog, teacher.kind, "label"), question="label")]
        checkpoint("teacher:label:asked")
        # Context enrichment (ECMF): subtitles rewritten with the cues the model perceives.
        if params.enrich:
            results.append(ask(cached=partial(cached_answers, ws.catalog, teacher.kind, "enrich"),
                               question="enrich"))
        summary = teacher_summary(results, budget, run_id) | {"workspace": str(ws.root),
                                                              "dataset": state.dataset,
                                                              "task_concurrency_limit": limit}
        # The outcomes are read from their artifacts, a row group at a time.
        record_teacher_run(ws.catalog, run_id, started, [ws.artifacts.path(r.outcomes) for r in results],
                           [ref for r in results for ref in r.refs], summary,
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
