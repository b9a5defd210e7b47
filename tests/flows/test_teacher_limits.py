"""The teacher tasks' concurrency limit (a Prefect tag limit shared by every flow run on the
server) and their retries (a retried attempt pays for no answer twice)."""

from __future__ import annotations

import contextlib
import json

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId
from prefect.exceptions import ObjectNotFound

from flows.ingest import ingest_flow
from flows.params import IngestParams
from storage.catalog import Catalog
from storage.teacher_store import cached_answers, record_answers, teacher_pool
from storage.workspace import Workspace
from tasks.teacher import TEACHER_TAG, make_teacher, query_teacher_task, run_limits
from tests.flows.test_cli import mersemi


@pytest.fixture
def ingested(synthetic_corpus, tmp_path):
    ws = tmp_path / "ws"
    ingest_flow(IngestParams(dataset_dir=synthetic_corpus, workspace=ws, dataset="syn"))
    names = (synthetic_corpus / "track_all_candidates.csv").read_text().split()[1:]
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"name": n, "model": "fer", "label": "happy",
                                           "scores": {"happy": 0.7, "sad": 0.3}}) + "\n" for n in names))
    return ws, names, answers


def test_teacher_tasks_carry_the_tag_and_its_limit_is_created_once(ingested):
    ws, names, answers = ingested
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectNotFound):
        client.delete_concurrency_limit_by_tag(TEACHER_TAG)             # a clean server: no limit yet
    code, summary, text = mersemi("teacher", "-w", str(ws), "--backend", "replay", "--answers", str(answers),
                                  "--json")
    assert code == 0, text
    assert summary["task_concurrency_limit"] == 1 and summary["answered"] == len(names)
    with get_client(sync_client=True) as client:
        limit = client.read_concurrency_limit_by_tag(TEACHER_TAG)
        assert limit.concurrency_limit == 1 and list(limit.active_slots) == []    # taken, then released
        # An operator's own limit stands: the next run reads it and does not reset it.
        client.delete_concurrency_limit_by_tag(TEACHER_TAG)
        client.create_concurrency_limit(tag=TEACHER_TAG, concurrency_limit=3)
    try:
        code, again, text = mersemi("teacher", "-w", str(ws), "--backend", "replay", "--answers",
                                    str(answers), "--json")
        assert code == 0, text
        assert again["task_concurrency_limit"] == 3 and again["requests"] == 0
        with get_client(sync_client=True) as client:
            assert client.read_concurrency_limit_by_tag(TEACHER_TAG).concurrency_limit == 3
            tasks = client.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(
                any_=[_flow_run_id(ws, again["run_id"])])))
        query = [t for t in tasks if t.name.startswith("query-teacher")]
        assert query and all(TEACHER_TAG in t.tags for t in query)
    finally:
        with get_client(sync_client=True) as client:
            client.delete_concurrency_limit_by_tag(TEACHER_TAG)
            client.create_concurrency_limit(tag=TEACHER_TAG, concurrency_limit=1)


def test_a_retried_teacher_task_pays_for_no_answer_twice(ingested, monkeypatch):
    """The first attempt records its answers, then fails (an I/O error after the write); the
    retry reads the cache again and asks for nothing more."""
    ws, names, answers = ingested
    monkeypatch.setattr(query_teacher_task, "retry_delay_seconds", [0, 0])
    workspace = Workspace(ws)
    labels = ("neutral", "angry", "happy", "sad", "worried", "surprise")
    calls = []

    def record(frame):
        record_answers(workspace.catalog, frame)
        calls.append(len(frame))
        if len(calls) == 1:
            raise OSError("disk hiccup after the answers were written")

    @flow
    def ask() -> tuple:
        teacher = make_teacher("replay", labels, answers=answers)
        budget, retry = run_limits(None, None, 1, 0.0, 0.0)
        result = query_teacher_task(teacher, teacher_pool(workspace.catalog, "syn"),
                                    cached=lambda keys: cached_answers(workspace.catalog, "replay",
                                                                       keys=keys),
                                    store=workspace.artifacts, run_id="teacher-retry", budget=budget,
                                    retry=retry, record=record)
        return result.summary, budget.requests

    summary, requests = ask()
    assert calls == [len(names)]                  # the retry recorded nothing: it had nothing new
    assert requests == len(names)                 # each clip asked once over both attempts
    assert summary["cache_hits"] == len(names) and summary["requests"] == 0
    with Catalog(ws / "catalog.duckdb").reader() as s:
        assert s.query("SELECT count(*) AS n FROM teacher_answers")["n"][0] == len(names)


def test_bad_input_is_not_retried(ingested):
    ws, _, _ = ingested
    workspace = Workspace(ws)
    attempts = []

    def record(frame):
        attempts.append(1)
        raise ValueError("a bug, not a passing fault")

    @flow
    def ask():
        teacher = make_teacher("replay", ("happy", "sad"), answers=ingested[2])
        budget, retry = run_limits(None, None, 1, 0.0, 0.0)
        return query_teacher_task(teacher, teacher_pool(workspace.catalog, "syn"), cached=None,
                                  store=workspace.artifacts, run_id="teacher-bad", budget=budget,
                                  retry=retry, record=record)

    with pytest.raises(ValueError, match="a bug"):
        ask()
    assert attempts == [1]


def _flow_run_id(ws, run_id: str) -> str:
    with Catalog(ws / "catalog.duckdb").reader() as s:
        return s.query("SELECT flow_run_id FROM runs WHERE run_id = ?", [run_id])["flow_run_id"][0]

