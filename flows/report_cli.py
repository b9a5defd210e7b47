"""The `mersemi report` command (registered on the app in flows/cli.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from flows.cli_common import JsonOpt, WorkspaceOpt, out, run_guarded


def show_report(summary: dict) -> None:
    out.print(f"report of mining run {summary['mine_run']} (finalize run "
              f"{summary['finalize_run'] or 'none yet'}): {summary['path']}", highlight=False)
    for line in summary["notes"]:
        out.print(f"[yellow]note:[/] {line}", highlight=False)


def report(
    workspace: WorkspaceOpt = None,
    dataset: Annotated[str | None, typer.Option(help="an ingested dataset (default: the only one)")] = None,
    run: Annotated[str | None, typer.Option("--run", help="mining run (default: the newest "
                                            "completed one)")] = None,
    finalize_run: Annotated[str | None, typer.Option(help="finalize run (default: the newest "
                                                     "completed one built on the mining run)")] = None,
    truth: Annotated[Path | None, typer.Option(help="CSV name,discrete with labels the pipeline "
                                               "never saw (benchmark corpora)")] = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="report file (default: "
                                                  "<workspace>/reports/<mine run>.html)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the HTML report of a mining run (and its finalize run), also as Prefect artifacts."""
    from flows.report import ReportParams, report_flow
    from storage.workspace import resolve

    def go():
        params = ReportParams(workspace=resolve(workspace), dataset=dataset, mine_run=run,
                              finalize_run=finalize_run, truth=truth, out=out_file)
        return report_flow(params)

    summary = run_guarded(go)
    if as_json:
        print(json.dumps(summary, sort_keys=True))
    else:
        show_report(summary)
