"""Flow: extract features for every usable clip of a dataset, one artifact per extractor."""

from __future__ import annotations

from prefect import Flow, flow, get_run_logger, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.futures import as_completed
from prefect.runtime import flow_run

from flows.faults import checkpoint
from flows.params import FeaturesParams
from flows.progress import progress_bar
from flows.runners import dask_runner
from storage.catalog import now
from storage.records import record_feature_sets, recorded_run, resolve_dataset
from storage.workspace import Workspace, new_run_id
from tasks.features import (
    ExtractorSpec,
    assemble_features_task,
    extract_shard_here_task,
    extract_shard_task,
    plan_features_task,
    shard_runner,
    summarize_features,
)


@flow(name="features", validate_parameters=True)
def features_flow(params: FeaturesParams) -> dict:
    ws = Workspace(params.workspace)
    run_id, started = new_run_id("features"), now()
    logger = get_run_logger()
    specs = [ExtractorSpec.of(n, params.extractor_params.get(n)) for n in params.extractors]
    with ws.exclusive(run_id):
        state = resolve_dataset(ws.catalog, params.dataset)
        with recorded_run(ws.catalog, run_id, "features", params.model_dump(mode="json"), flow_run.id):
            # Plan: per extractor, the clips whose (extractor key, media key) is not cached.
            registry, jobs, cached = plan_features_task(
                ws.artifacts.path_of(state.registry_artifact_id), specs, ws.feature_cache,
                params.shard_size)
            # Extract: shards in our worker processes, or wherever the task runner puts them
            # (Dask); each stores its rows in the feature cache when it ends.
            shard_results = []
            cache_root = str(ws.feature_cache.root)
            with shard_runner(1 if params.task_runner == "dask" else params.workers, params.batch_size,
                              params.max_side) as runner, \
                    progress_bar("extracting", sum(j.n_clips for j in jobs)) as advance:
                if params.task_runner == "dask":
                    futures = extract_shard_here_task.map(
                        jobs, unmapped(cache_root), unmapped(params.batch_size), unmapped(params.max_side))
                else:
                    futures = extract_shard_task.map(unmapped(runner), jobs, unmapped(cache_root))
                for future in as_completed(futures):
                    shard_results.append(future.result())
                    checkpoint(f"features:shard-{len(shard_results)}:cached")
                    advance(max(e["clips"] for e in shard_results[-1]["extractors"].values()))
                    logger.info("shard %d done (%d of %d)", shard_results[-1]["shard"],
                                len(shard_results), len(jobs))
            # Assemble each extractor's artifact from the cache, then record them.
            sets = [assemble_features_task(registry, spec, cache_root, ws.artifacts, run_id)
                    for spec in specs]
            summary = summarize_features(specs, sets, cached, shard_results)
            checkpoint("features:assembled")
            record_feature_sets(ws.catalog, run_id, started, state.dataset, state.registry_artifact_id,
                                [s.as_record() for s in sets], summary)
            checkpoint("features:recorded")           # (recorded with the run's end, in one transaction)
    summary |= {"run_id": run_id, "dataset": state.dataset, "workspace": str(ws.root),
                "task_runner": params.task_runner}
    create_markdown_artifact(key="features-summary", markdown=summary_markdown(summary),
                             description=f"features of {state.dataset}")
    return summary


def features_flow_for(params: FeaturesParams) -> Flow:
    """The features flow with the task runner `params` asks for."""
    if params.task_runner == "dask":
        return features_flow.with_options(task_runner=dask_runner(params.dask_address, params.workers))
    return features_flow


def summary_markdown(summary: dict) -> str:
    lines = [f"# Features of `{summary['dataset']}`", "",
             "| extractor | clips | ok | missing | error | cached | extracted | clips/s | dim |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, e in summary["extractors"].items():
        lines.append(f"| {name} | {e['clips']} | {e['ok']} | {e['missing']} | {e['error']} | "
                     f"{e['cached']} | {e['extracted']} | {e['clips_per_s'] or '-'} | {e['dim']} |")
    return "\n".join(lines)
