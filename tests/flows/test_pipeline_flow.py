"""`mersemi run`: the whole pipeline through Prefect, checked through the server's API; a warm
re-run reuses every stage's results."""

from __future__ import annotations

from pathlib import Path

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


def test_pipeline_runs_every_stage_as_a_subflow_with_artifacts(corpus_copy, tmp_path):
    ws = tmp_path / "ws"
    # Two candidates are held back, to be added to the dataset before the last run.
    listed = corpus_copy / "track_all_candidates.csv"
    header, *rows = listed.read_text().splitlines()
    held_back = [r.split(",")[0] for r in rows[:2]]
    listed.write_text("\n".join([header, *rows[2:]]) + "\n")
    code, summary, text = run_pipeline(corpus_copy, ws)
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
        assert [flows[r.flow_id] for r in children] == [*summary["stages"], "report"]
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
                "finalize-summary", "run-report", "run-report-file"} <= {a.key for a in artifacts}
    # The run report of this run's mining and final stage.
    report = summary["report"]
    assert report["mine_run"] == summary["mine"]["run_id"]
    assert report["finalize_run"] == summary["finalize"]["run_id"]
    html = Path(report["path"]).read_text(encoding="utf-8")
    assert summary["mine"]["run_id"] in html and "Confusion matrices" in html
    assert Catalog(ws / "catalog.duckdb").failed_checks() == {}

    # Warm re-run, nothing changed: every stage reuses what it recorded.
    code, again, text = run_pipeline(corpus_copy, ws)
    assert code == 0, text
    assert again["ingest"]["changed"] is False, again["ingest"]
    assert all(e["cached"] == e["clips"] for e in again["features"]["extractors"].values()), again["features"]
    assert again["teacher"]["questions"]["label"]["requests"] == 0
    assert again["mine"]["cached"] and again["mine"]["run_id"] == summary["mine"]["run_id"], again["mine"]
    assert again["finalize"]["cached"] and again["finalize"]["run_id"] == summary["finalize"]["run_id"]

    # Clips added to the dataset: only they cost feature extraction and teacher calls, and the
    # new mining run's records say which clips are new to mining.
    listed.write_text("\n".join([header, *rows]) + "\n")
    code, third, text = run_pipeline(corpus_copy, ws)
    assert code == 0, text
    assert third["ingest"]["changed"] is True
    assert all(e["extracted"] == 2 for e in third["features"]["extractors"].values()), third["features"]
    assert third["teacher"]["questions"]["label"]["requests"] == 2
    assert not third["mine"]["cached"] and third["mine"]["new_clips"] == 2
    assert summary["mine"]["new_clips"] == summary["mine"]["rounds"][0]["pool"]   # the first run: all new
    with Catalog(ws / "catalog.duckdb").reader() as s:
        new = s.query("SELECT c.name, d.round, d.decision FROM clip_decisions d JOIN clips c USING (clip_id) "
                      "WHERE d.run_id = ? AND d.new_clip ORDER BY d.round, c.name", [third["mine"]["run_id"]])
        unknown = s.query("SELECT count(*) AS n FROM clip_decisions WHERE new_clip IS NULL")["n"][0]
    assert sorted(new[new["round"] == 1]["name"]) == sorted(held_back)
    assert unknown == 0
    r1 = third["mine"]["rounds"][0]
    accepted_new = new[new["round"].eq(1) & new["decision"].eq("accepted")]
    assert r1["new_in_pool"] == 2 and r1["new_accepted"] == len(accepted_new)

    # `mersemi report` on demand: the newest mining run by default, written where asked.
    code, rep, text = mersemi("report", "-w", str(ws), "--json", "--out", str(tmp_path / "report.html"))
    assert code == 0, text
    assert rep["mine_run"] == third["mine"]["run_id"] and (tmp_path / "report.html").stat().st_size > 10_000
