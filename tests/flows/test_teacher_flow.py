"""`mersemi teacher` end to end: replay on an ingested corpus, Gemini against the fake server."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pandas as pd
import pytest

from flows.ingest import ingest_flow
from flows.params import IngestParams
from storage.catalog import Catalog
from storage.teacher_store import run_answers, run_label_answers
from tests.conftest import shared_path
from tests.flows.test_cli import dump
from tests.flows.test_cli import mersemi as run_cli
from tests.models.conftest import KEY
from tests.models.fake_gemini import FakeGeminiServer, error


def mersemi(*args: str) -> tuple[int, dict | None, str]:
    """`mersemi teacher ARGS` through the real CLI app."""
    return run_cli("teacher", *args)


@pytest.fixture
def ingested(synthetic_corpus, tmp_path):
    ws = tmp_path / "ws"
    ingest_flow(IngestParams(dataset_dir=synthetic_corpus, workspace=ws, dataset="syn"))
    names = (synthetic_corpus / "track_all_candidates.csv").read_text().split()[1:]
    return ws, names


def test_replay_twice_second_run_makes_no_request(ingested, tmp_path):
    ws, names = ingested
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"name": n, "model": "fer", "label": "happy",
                                           "scores": {"happy": 0.7, "sad": 0.3}, "raw": "r"}) + "\n"
                               for n in names[:-1]))
    args = ("--dataset", "syn", "-w", str(ws), "--backend", "replay", "--answers", str(answers), "--json")
    code, first, text = mersemi(*args)
    assert code == 0, text
    assert (first["requests"], first["answered"], first["failed"], first["cache_hits"]) == (12, 11, 1, 0)
    assert first["not_asked"] == 0 and first["unparseable"] == 0
    code, second, _ = mersemi(*args)
    assert code == 0
    assert (second["requests"], second["cache_hits"], second["answered"]) == (1, 11, 11)  # the failed one
    catalog = Catalog(ws / "catalog.duckdb")
    rows = run_answers(catalog, second["run_id"])
    assert len(rows) == 12 and (rows["label"].dropna() == "happy").sum() == 11
    assert catalog.failed_checks() == {}
    code, _, text = mersemi(*args[:-1])                  # the human-readable table
    assert code == 0 and "cache" in text


def test_gemini_budget_and_the_key_never_leaks(ingested, monkeypatch, caplog):
    ws, _ = ingested
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    with FakeGeminiServer() as fake, caplog.at_level(logging.DEBUG):
        fake.echo_key_in_errors = True
        fake.script.extend([error(429, "RESOURCE_EXHAUSTED"), error(400, "INVALID_ARGUMENT")])
        code, summary, text = mersemi("--dataset", "syn", "-w", str(ws), "--base-url", fake.base_url,
                                      "--max-requests", "5", "--concurrency", "1", "--enrich",
                                      "--retry-initial-s", "0.001", "--json")
    assert code == 0, text
    label = summary["questions"]["label"]
    # 429 -> retried; 400 -> failed without retry; then 3 answers; the budget stops the rest.
    assert label["requests"] == 5 and label["failed"] == 1 and label["answered"] == 3
    assert label["not_asked"] == 12 - 4 and "request budget of 5" in summary["budget_exhausted"]
    assert summary["questions"]["enrich"]["not_asked"] == 12 and summary["requests"] == 5
    assert len(fake.generate_calls()) == 5
    catalog = Catalog(ws / "catalog.duckdb")
    with catalog.reader() as s:
        outcomes = s.query("SELECT outcome, count(*) AS n FROM teacher_outcomes "
                           "WHERE run_id = ? GROUP BY ALL", [summary["run_id"]])
        errors = s.query("SELECT error FROM teacher_answers WHERE status = 'failed'")["error"].tolist()
    assert dict(zip(outcomes["outcome"], outcomes["n"], strict=True))["not_asked"] == 8 + 12
    assert errors and "bad key ***" in errors[0]
    # What voting reads: the label question's rows, without reasoning and raw text.
    voting = pd.concat(run_label_answers(catalog, summary["run_id"], rows=5), ignore_index=True)
    voting = voting.sort_values("clip_id", ignore_index=True)             # streamed in no order
    full = run_answers(catalog, summary["run_id"])
    full = full[full["question"] == "label"].sort_values("clip_id", ignore_index=True)
    assert list(voting.columns) == ["clip_id", "question", "status", "label", "scores"]
    assert len(voting) == 12 and voting["status"].eq("answered").sum() == 3
    pd.testing.assert_frame_equal(voting, full[list(voting.columns)])
    artifacts = b"".join(p.read_bytes() for p in (ws / "artifacts").rglob("*.parquet"))
    tables = "\n".join(dump(catalog).values())
    for where in (text, caplog.text, tables, artifacts.decode("latin-1"), json.dumps(summary)):
        assert KEY not in where


def test_unknown_dataset_and_bad_budget_exit_2(ingested):
    ws, _ = ingested
    code, _, text = mersemi("--dataset", "nope", "-w", str(ws), "--backend", "replay",
                            "--answers", "x.jsonl")
    assert code == 2 and "no dataset 'nope' in the workspace (it holds syn)" in text
    code, _, text = mersemi("--dataset", "syn", "-w", str(ws), "--max-requests", "-1")
    assert code == 2 and "max_requests" in text


@pytest.mark.shared_data
@pytest.mark.slow
def test_replay_on_a_small_composite_corpus(tmp_path):
    script = shared_path("bench", "build_composite.py")
    corpus = tmp_path / "composite"
    subprocess.run([sys.executable, str(script), "--out", str(corpus), "--labeled", "30", "--unlabeled", "60",
                    "--test", "30", "--jobs", "2"], check=True, capture_output=True, timeout=600)
    ws = tmp_path / "ws"
    ingest_flow(IngestParams(dataset_dir=corpus, workspace=ws, dataset="composite"))
    args = ("--dataset", "composite", "-w", str(ws), "--backend", "replay",
            "--answers", str(corpus / "teacher" / "answers.jsonl"), "--json")
    code, first, text = mersemi(*args)
    assert code == 0, text
    # Every candidate (the unlabelled and the held-out test clips) has a line in the file.
    candidates = len((corpus / "track_all_candidates.csv").read_text().split()) - 1
    assert first["pool"] == candidates == 90 and first["requests"] == 90
    assert first["answered"] + first["refused"] == 90 and first["failed"] == first["unparseable"] == 0
    code, second, _ = mersemi(*args)
    assert second["requests"] == 0 and second["cache_hits"] == 90 and second["answered"] == first["answered"]
    with Catalog(ws / "catalog.duckdb").reader() as s:
        n = s.query("SELECT count(*) AS n FROM teacher_answers WHERE teacher = 'replay'")["n"][0]
    assert n == 90
