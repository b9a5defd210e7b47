"""Flow: the run report. The catalog (read-only) and artifacts -> one HTML file + Prefect artifacts."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from flows.params import ReportParams
from tasks.report import build_report_task


@flow(name="report", validate_parameters=True)
def report_flow(params: ReportParams) -> dict:
    # Gather from the catalog (a reader only: a running pipeline keeps writing), render, write.
    result = build_report_task(params.workspace, params.dataset, params.mine_run, params.finalize_run,
                               params.truth, params.out)
    # The key tables in the UI, and a link to the full HTML file.
    create_markdown_artifact(key="run-report", markdown=result["markdown"],
                             description=f"run report of mining run {result['mine_run']}")
    create_link_artifact(key="run-report-file", link=Path(result["path"]).as_uri(),
                         link_text=Path(result["path"]).name, description="the HTML run report")
    return {k: v for k, v in result.items() if k != "markdown"}
