"""`--task-runner dask`: feature shards run on a Dask cluster (a local one, or one given by
address) through Prefect's Dask task runner; the results equal the process pool's, and only the
flow process writes the catalog."""

from __future__ import annotations

import os

import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)

from storage.catalog import Catalog
from tests.flows.test_cli import mersemi

pytestmark = pytest.mark.slow

EXTRACTORS = "audio_egemaps,text"           # the fast ones: the runner is under test, not them


def features(ws, *extra: str) -> dict:
    code, summary, text = mersemi("features", "-w", str(ws), "--json", "--shard-size", "8",
                                  "--extractors", EXTRACTORS, *extra)
    assert code == 0, text
    return summary


def vectors(ws, summary: dict, name: str) -> pd.DataFrame:
    frame = pd.read_parquet(ws / "artifacts" / summary["extractors"][name]["artifact"])
    return frame.set_index("clip_id").sort_index()[["status", "reason", "vector"]]


@pytest.fixture(scope="module")
def reference(synthetic_corpus, tmp_path_factory):
    """The same corpus extracted by our own process pool, for comparison."""
    ws = tmp_path_factory.mktemp("pool") / "ws"
    assert mersemi("ingest", str(synthetic_corpus), "-w", str(ws), "--json")[0] == 0
    return ws, features(ws, "--workers", "1")


def test_local_dask_cluster_runs_the_shards_and_matches_the_process_pool(synthetic_corpus, reference,
                                                                        tmp_path):
    ws = tmp_path / "ws"
    assert mersemi("ingest", str(synthetic_corpus), "-w", str(ws), "--json")[0] == 0
    summary = features(ws, "--task-runner", "dask", "--workers", "2")
    assert summary["task_runner"] == "dask" and summary["shards"] == 3
    # The shards ran in the cluster's worker processes, not in the flow's own process.
    workers = summary["shard_workers"]
    assert workers and all(not w.endswith(f":{os.getpid()}") for w in workers)
    ref_ws, ref = reference
    for name in EXTRACTORS.split(","):
        assert summary["extractors"][name]["extracted"] == ref["extractors"][name]["clips"]
        got, want = vectors(ws, summary, name), vectors(ref_ws, ref, name)
        assert got.index.tolist() == want.index.tolist()
        assert got["status"].tolist() == want["status"].tolist()
        for a, b in zip(got["vector"], want["vector"], strict=True):
            assert (a is None) == (b is None) and (a is None or abs(a - b).max() < 1e-4), name
    # Prefect saw one extract-shard task run per shard, all completed, under this flow run.
    with get_client(sync_client=True) as client:
        run = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(
            any_=[_flow_run_id(ws, summary["run_id"])])))[0]
        tasks = client.read_task_runs(task_run_filter=TaskRunFilter(
            flow_run_id=TaskRunFilterFlowRunId(any_=[run.id])))
    shard_tasks = [t for t in tasks if t.name.startswith("extract-shard")]
    assert len(shard_tasks) == 3 and all(t.state.is_completed() for t in shard_tasks)
    assert Catalog(ws / "catalog.duckdb").failed_checks() == {}


def test_existing_cluster_by_address_and_cached_rerun(synthetic_corpus, tmp_path):
    ws = tmp_path / "ws"
    assert mersemi("ingest", str(synthetic_corpus), "-w", str(ws), "--json")[0] == 0
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        worker_pids = set(client.run(os.getpid).values())
        first = features(ws, "--task-runner", "dask", "--dask-address", cluster.scheduler_address)
        # Every shard ran in that cluster's one worker process.
        assert first["shards"] == 3
        assert [int(w.rsplit(":", 1)[1]) for w in first["shard_workers"]] == sorted(worker_pids)
        again = features(ws, "--task-runner", "dask", "--dask-address", cluster.scheduler_address)
    # Nothing left to extract: no shard is sent, everything comes from the cache.
    assert again["shards"] == 0
    assert all(e["cached"] == e["clips"] for e in again["extractors"].values())


def test_dask_address_without_the_dask_runner_is_refused(tmp_path):
    code, _, text = mersemi("features", "-w", str(tmp_path / "ws"), "--dask-address", "tcp://127.0.0.1:1")
    assert code == 2 and "dask_address is set but task_runner is not dask" in text
    code, _, text = mersemi("features", "-w", str(tmp_path / "ws"), "--task-runner", "spark")
    assert code == 2 and "task_runner" in text


def _flow_run_id(ws, run_id: str) -> str:
    with Catalog(ws / "catalog.duckdb").reader() as s:
        return s.query("SELECT flow_run_id FROM runs WHERE run_id = ?", [run_id])["flow_run_id"][0]
