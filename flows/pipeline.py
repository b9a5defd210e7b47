"""Flow: the whole pipeline, each stage a subflow: ingest -> features -> teacher -> mine -> finalize."""

from __future__ import annotations

from prefect import Flow, flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.features import features_flow_for
from flows.finalize import finalize_flow
from flows.ingest import ingest_flow
from flows.mine import mine_flow
from flows.params import PipelineParams, ReportParams
from flows.report import report_flow
from flows.teacher import teacher_flow

SUBFLOWS = {"ingest": ingest_flow, "teacher": teacher_flow, "mine": mine_flow, "finalize": finalize_flow}


def stage_flow(stage: str, params) -> Flow:
    """A stage's flow; features runs on the task runner its parameters name."""
    return features_flow_for(params) if stage == "features" else SUBFLOWS[stage]


@flow(name="pipeline", validate_parameters=True)
def pipeline_flow(params: PipelineParams) -> dict:
    logger = get_run_logger()
    summary: dict = {"workspace": str(params.workspace), "dataset_dir": str(params.dataset_dir),
                     "stages": list(params.stages)}
    # Each stage is its own subflow run (visible in the UI), in pipeline order; a stage reads
    # what the previous ones recorded in the workspace, and skips work that is already done.
    for stage in params.stages:
        logger.info("pipeline: %s", stage)
        stage_params = params.stage(stage)
        summary[stage] = stage_flow(stage, stage_params)(stage_params)
    # The run report (HTML + artifacts) of this run's mining, and of its final stage if it ran.
    if params.report and "mine" in summary:
        summary["report"] = report_flow(ReportParams(workspace=params.workspace,
                                                     dataset=params.ingest.get("dataset"),
                                                     mine_run=summary["mine"]["run_id"]))
    create_markdown_artifact(key="pipeline-summary", markdown=pipeline_markdown(summary),
                             description="pipeline run")
    return summary


def pipeline_markdown(summary: dict) -> str:
    lines = [f"# Pipeline on `{summary['dataset_dir']}`", "", f"Workspace: `{summary['workspace']}`", "",
             "| stage | run | outcome |", "|---|---|---|"]
    for stage in summary["stages"]:
        s = summary.get(stage) or {}
        outcome = {
            "ingest": f"{s.get('registered')} clips, changed: {s.get('changed')}",
            "features": f"{len(s.get('extractors', {}))} feature sets",
            "teacher": f"{s.get('answered')} answered, {s.get('cache_hits')} from cache",
            "mine": f"accepted per round {s.get('accepted_per_round')}",
            "finalize": f"submission `{s.get('submission')}`",
        }[stage]
        lines.append(f"| {stage} | `{s.get('run_id', '')}` | {outcome} |")
    if "report" in summary:
        lines += ["", f"Report: `{summary['report']['path']}`"]
    return "\n".join(lines)
