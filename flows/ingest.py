"""Flow: ingest a dataset into the workspace (register clips, record the registry)."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.faults import checkpoint
from flows.params import IngestParams
from storage.catalog import now
from storage.records import dataset_state, probe_cache, record_ingest, record_probes
from storage.workspace import Workspace, new_run_id
from tasks.ingest import dataset_name, register_clips_task


@flow(name="ingest", validate_parameters=True)
def ingest_flow(params: IngestParams) -> dict:
    ws = Workspace(params.workspace)
    run_id, started = new_run_id("ingest"), now()
    with ws.exclusive(run_id):
        # What the workspace knows already: probed files and the dataset's current registry.
        cache = probe_cache(ws.catalog)
        prior = dataset_state(ws.catalog, params.dataset or dataset_name(params.dataset_dir))
        # Scan the layout, probe the media, build the registry (saved only if it changed).
        result = register_clips_task(
            params.dataset_dir, ws.artifacts, run_id, params.labels, layout=params.layout,
            text_column=params.text_column, dataset=params.dataset, probe_cache=cache,
            prior=prior, jobs=params.jobs,
        )
        checkpoint("ingest:registry-saved")
        # Record it: a changed registry becomes the dataset's current one.
        if result.changed:
            record_ingest(ws.catalog, run_id, started, params.model_dump(mode="json"),
                          result.dataset, result.root, result.layout, result.labels,
                          result.ref, result.registry, result.probe_rows, result.summary,
                          flow_run_id=flow_run.id)
        elif len(result.probe_rows):
            record_probes(ws.catalog, result.probe_rows)
    summary = result.summary | {
        "run_id": run_id if result.changed else None,
        "workspace": str(ws.root),
        "registry": str(ws.artifacts.path(result.ref)) if result.changed
        else str(ws.artifacts.path_of(prior.registry_artifact_id)),
    }
    create_markdown_artifact(key="ingest-summary", markdown=summary_markdown(summary),
                             description=f"ingest of {result.dataset}")
    return summary


def summary_markdown(summary: dict) -> str:
    lines = [f"# Ingest of `{summary['dataset']}` ({summary['layout']} layout)", "",
             "| clips | ok | degraded | errors | changed |", "|---|---|---|---|---|",
             f"| {summary['registered']} | {summary['ok']} | {summary['degraded']} | "
             f"{summary['errors']} | {summary['changed']} |", ""]
    if summary["by_reason"]:
        lines += ["| reason | clips |", "|---|---|"]
        lines += [f"| {reason} | {n} |" for reason, n in summary["by_reason"].items()]
    lines += ["", f"Registry: `{summary['registry']}`"]
    return "\n".join(lines)
