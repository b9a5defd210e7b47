"""The `mersemi teacher` command (registered on the app in flows/cli.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flows.cli_common import JsonOpt, WorkspaceOpt, out, run_guarded


def show_teacher(summary: dict) -> None:
    table = Table(title=f"teacher: {summary['teacher']} ({summary['model']}) on {summary['dataset']}")
    columns = ("pool", "requests", "cache_hits", "answered", "unparseable", "refused", "failed",
               "not_asked", "cost_usd")
    table.add_column("question")
    for col in columns:
        table.add_column(col.replace("_", " "), justify="right")
    for question, s in summary["questions"].items():
        table.add_row(question, *(str(s[c]) for c in columns))
    out.print(table)
    if summary["budget_exhausted"]:
        out.print(f"[yellow]budget exhausted:[/] {summary['budget_exhausted']}; the clips not asked "
                  "are listed in the answers artifact (outcome not_asked)", highlight=False)
    out.print(f"run {summary['run_id']}: {summary['artifact']}", highlight=False)


def teacher(
    workspace: WorkspaceOpt = None,
    dataset: Annotated[str | None, typer.Option(help="an ingested dataset [default: the only one]")] = None,
    backend: Annotated[str, typer.Option(help="gemini, replay or local")] = "gemini",
    answers: Annotated[Path | None, typer.Option(help="replay: JSONL answers (ours or a Gemini "
                                                 "batch job's output)")] = None,
    predictions: Annotated[Path | None, typer.Option(help="Parquet with clip_id, p_<label>: orders "
                                                     "the pool; the local teacher's answers")] = None,
    model: Annotated[str | None, typer.Option(help="model name [gemini: gemini-2.5-flash]")] = None,
    split: Annotated[str, typer.Option(help="candidate, train or test")] = "candidate",
    temperature: Annotated[float, typer.Option(help="gemini: sampling temperature")] = 0.0,
    prompt_file: Annotated[Path | None, typer.Option(help="gemini: label prompt template "
                                                     "({labels}, {subtitle})")] = None,
    media: Annotated[str, typer.Option(help="gemini: mp4 or frames")] = "mp4",
    enrich: Annotated[bool, typer.Option(help="gemini: also rewrite subtitles with emotional cues")] = False,
    secret_block: Annotated[str | None, typer.Option(help="Prefect Secret block with the API key "
                                                     "[default: $GEMINI_API_KEY / $GOOGLE_API_KEY]")] = None,
    base_url: Annotated[str | None, typer.Option(help="gemini: API endpoint")] = None,
    max_requests: Annotated[int | None, typer.Option(help="budget: requests in this run")] = None,
    max_cost_usd: Annotated[float | None, typer.Option(help="budget: estimated USD in this run")] = None,
    rpm: Annotated[int | None, typer.Option(help="requests per minute")] = None,
    concurrency: Annotated[int, typer.Option(help="requests in flight")] = 4,
    order: Annotated[str, typer.Option(
        help="auto, hash, margin, entropy, disagreement, rare_label")] = "auto",
    timeout_s: Annotated[float, typer.Option(help="gemini: seconds per request")] = 120.0,
    retry_attempts: Annotated[int, typer.Option(help="tries per request (408/429/5xx, timeouts)")] = 5,
    retry_initial_s: Annotated[float, typer.Option(help="first backoff delay, doubling per retry")] = 1.0,
    as_json: JsonOpt = False,
) -> None:
    """Ask a teacher for labels of the unlabelled clips: cached, rate-limited, within a budget."""
    from flows.params import TeacherParams
    from flows.teacher import teacher_flow
    from storage.workspace import resolve

    def go():
        extra = {"prompt": prompt_file.read_text("utf-8")} if prompt_file else {}
        params = TeacherParams(
            workspace=resolve(workspace), dataset=dataset, split=split, backend=backend,
            answers=answers, predictions=predictions, model=model, temperature=temperature,
            media=media, enrich=enrich, secret_block=secret_block, base_url=base_url,
            max_requests=max_requests, max_cost_usd=max_cost_usd, rpm=rpm, concurrency=concurrency,
            order=order, timeout_s=timeout_s, retry_attempts=retry_attempts,
            retry_initial_s=retry_initial_s, **extra)
        return teacher_flow(params)

    summary = run_guarded(go)
    if as_json:
        print(json.dumps(summary, sort_keys=True))
    else:
        show_teacher(summary)
