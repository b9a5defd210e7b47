"""`mersemi run`: the whole pipeline through Prefect, checked through the server's API; a warm
re-run reuses every stage's results."""

from __future__ import annotations

import pandas as pd
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)

from storage.catalog import Catalog
from tests.flows.test_cli import mersemi

SMALL = ["--set", "mine.folds=2", "--set", "mine.seeds=[0]", "--set", "mine.epochs=25",
         "--set", "mine.rounds=2", "--set", "mine.target_precision=0.6",
         "--set", "finalize.folds=2", "--set", "finalize.seeds=[0]", "--set", "finalize.epochs=25",
         "--set", "features.workers=1", "--set", "features.extractors=[audio_egemaps, text, visual_face]"]


def run_pipeline(corpus, ws):
    return mersemi("run", str(corpus), "-w", str(ws), "--json", "--set", "teacher.backend=replay",
                   "--set", f"teacher.answers={corpus / 'teacher' / 'answers.jsonl'}", *SMALL)


def test_pipeline_runs_every_stage_as_a_subflow_with_artifacts(synthetic_corpus, tmp_path):
    ws = tmp_path / "ws"
    code, summary, text = run_pipeline(synthetic_corpus, ws)
    assert code == 0, text
    assert summary["stages"] == ["ingest", "features", "teacher", "mine", "finalize"]
    sub = pd.read_csv(summary["finalize"]["submission"])
    assert len(sub) == summary["ingest"]["by_split"]["candidate"]
    with get_client(sync_client=True) as client:
        # The pipeline run of this workspace (the session's server holds other tests' runs too).
        pipelines = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["pipeline"])))
        mine_pipeline = [r for r in pipelines if r.parameters["params"]["workspace"] == str(ws)]
        assert len(mine_pipeline) == 1 and mine_pipeline[0].state.is_completed()
        pid = mine_pipeline[0].id
        # Each stage is a subflow run of the pipeline, completed, in order.
        children = sorted(client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[pid]))), key=lambda r: r.start_time)
        flows = {f.id: f.name for f in client.read_flows()}
        assert [flows[r.flow_id] for r in children] == summary["stages"]
        assert all(r.state.is_completed() for r in children)
        # The stages' own tasks ran under them (training and the vote of each round).
        mine_run = next(r for r in children if flows[r.flow_id] == "mine")
        mine_tasks = client.read_task_runs(task_run_filter=TaskRunFilter(
            flow_run_id=TaskRunFilterFlowRunId(any_=[mine_run.id])))
        assert {"train-baseline", "mine-round"} <= {t.name.rsplit("-", 1)[0] for t in mine_tasks}, \
            [t.name for t in mine_tasks]
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[pid, *(r.id for r in children)])))
        assert {"pipeline-summary", "mine-summary", "mine-round-1", "mine-round-1-accepted",
                "finalize-summary"} <= {a.key for a in artifacts}
    assert Catalog(ws / "catalog.duckdb").failed_checks() == {}

    # Warm re-run, nothing changed: every stage reuses what it recorded.
    code, again, text = run_pipeline(synthetic_corpus, ws)
    assert code == 0, text
    assert again["ingest"]["changed"] is False, again["ingest"]
    assert all(e["cached"] == e["clips"] for e in again["features"]["extractors"].values()), again["features"]
    assert again["teacher"]["questions"]["label"]["requests"] == 0
    assert again["mine"]["cached"] and again["mine"]["run_id"] == summary["mine"]["run_id"], again["mine"]
    assert again["finalize"]["cached"] and again["finalize"]["run_id"] == summary["finalize"]["run_id"]
