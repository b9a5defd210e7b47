"""Security: the Gemini API key never leaves memory (not in the catalog, the artifacts, the
Prefect flow runs' parameters or logs, a run's output, nor the traceback of a failed run), and
hostile clip names (`../`, absolute paths, NUL bytes, symlinks out of the dataset) cannot make
any file land outside the workspace."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
from prefect.settings import PREFECT_API_URL

from storage.catalog import Catalog
from storage.workspace import Workspace
from tests.flows.test_cli import dump, mersemi
from tests.models.fake_gemini import FakeGeminiServer, answer_text, error, ok

SECRET = "AIzaTESTSECRET0123456789"
MARK = "TESTSECRET"          # any part of the key that would give it away


def mersemi_process(args: list[str], home: Path, **env: str) -> subprocess.CompletedProcess:
    """A real `mersemi` process (its own logging set-up, Typer's traceback printer) reporting
    to the session's Prefect server, with the key in its environment and debug logging."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERSEMI_")} | {
        "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_HOME": str(home),
        "PREFECT_LOGGING_LEVEL": "DEBUG", "GEMINI_API_KEY": SECRET} | env
    return subprocess.run([str(Path(sys.executable).with_name("mersemi")), *args], env=env,
                          capture_output=True, text=True, timeout=600)


def flow_runs_of(ws: Path) -> list:
    """Every flow run (and subflow run) of this session's server whose parameters name `ws`."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
    return [r for r in runs if str(ws) in json.dumps(r.parameters, default=str)]


def logs_of(runs: list) -> str:
    ids = [r.id for r in runs]
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)))
        states = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
    return "\n".join([entry.message for entry in logs] + [str(r.state.message) for r in states])


def files_holding(root: Path, text: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def test_the_api_key_never_leaves_memory(synthetic_corpus, tmp_path):
    ws, home = tmp_path / "ws", tmp_path / "prefect-home"
    with FakeGeminiServer() as fake:
        fake.echo_key_in_errors = True                       # a server that quotes the key back
        fake.script.extend([error(400, "INVALID_ARGUMENT"), error(429, "RESOURCE_EXHAUSTED"),
                            error(500, "INTERNAL"), error(500, "INTERNAL"), ok("{broken")])
        fake.default = ok(answer_text("sad"))
        teacher = ["--set", "teacher.backend=gemini", "--set", f"teacher.base_url={fake.base_url}",
                   "--set", "teacher.concurrency=1", "--set", "teacher.retry_attempts=2",
                   "--set", "teacher.retry_initial_s=0.001", "--set", "teacher.enrich=true"]
        done = mersemi_process(["run", str(synthetic_corpus), "-w", str(ws), "--stages", "ingest,teacher",
                                "--json", *teacher], home)
        assert done.returncode == 0, done.stderr[-3000:]
        # A run that fails after the client is made: its traceback is printed.
        failed = mersemi_process(["teacher", "-w", str(ws), "--base-url", fake.base_url,
                                  "--predictions", str(tmp_path / "missing.parquet")], home)
        assert all(c.headers["x-goog-api-key"] == SECRET for c in fake.generate_calls())   # it was used
    assert failed.returncode == 1 and "Traceback" in failed.stderr + failed.stdout
    assert "missing.parquet" in failed.stderr + failed.stdout

    summary = json.loads(done.stdout.strip().splitlines()[-1])
    label = summary["teacher"]["questions"]["label"]
    assert label["failed"] == 2 and label["unparseable"] == 1 and label["answered"] == 9, label
    catalog = Catalog(ws / "catalog.duckdb")
    with catalog.reader() as s:
        errors = s.query("SELECT error FROM teacher_answers WHERE status = 'failed'")["error"].tolist()
        runs = s.query("SELECT command, status, error FROM runs ORDER BY started_at")
    assert any("bad key ***" in e for e in errors)           # the echoed key was redacted
    assert runs["status"].tolist() == ["completed", "completed", "failed"], runs
    # Nowhere: the catalog (the file's bytes and its tables), any file of the workspace (the
    # Parquet artifacts among them), the Prefect home, the flow runs' parameters, states and
    # logs on the server, the runs' output and the failed run's traceback.
    assert files_holding(ws, MARK) == [] and files_holding(home, MARK) == []
    assert MARK not in "\n".join(dump(catalog).values())
    assert list(ws.rglob("*.parquet"))
    prefect_runs = flow_runs_of(ws)
    assert sorted(flow_names(prefect_runs)) == ["ingest", "pipeline", "teacher", "teacher"]
    assert MARK not in json.dumps([r.parameters for r in prefect_runs], default=str)
    assert MARK not in logs_of(prefect_runs)
    for output in (done.stdout, done.stderr, failed.stdout, failed.stderr):
        assert MARK not in output


def flow_names(runs: list) -> list[str]:
    with get_client(sync_client=True) as client:
        return [client.read_flow(r.flow_id).name for r in runs]


# --- hostile clip names -----------------------------------------------------------------------

def hostile_corpus(corpus: Path, outside: Path) -> dict[str, str]:
    """The synthetic corpus with candidates whose names try to leave the dataset and the
    workspace, each with a file where a naive join of the name would point; and one clip whose
    media are symlinks to files outside the dataset. Returns name -> what it tries."""
    outside.mkdir()
    real = sorted((corpus / "video").glob("*.mp4"))[0].stem
    shutil.copy(corpus / "video" / f"{real}.mp4", outside / "real.mp4")
    shutil.copy(corpus / "audio" / f"{real}.wav", outside / "real.wav")
    names = {"../escape": "parent folder", "../../outside/real": "two folders up",
             str(outside / "real"): "absolute path", "nul\x00byte": "NUL byte", "..": "dot-dot"}
    shutil.copy(outside / "real.mp4", corpus / "escape.mp4")            # video/../escape.mp4
    (corpus / "video" / "linked.mp4").symlink_to(outside / "real.mp4")
    (corpus / "audio" / "linked.wav").symlink_to(outside / "real.wav")
    names["linked"] = "symlinks out of the dataset"
    with open(corpus / "track_all_candidates.csv", "a", encoding="utf-8", newline="") as f:
        f.writelines(f"{name}\n" for name in names)
    with open(corpus / "subtitle_chieng.csv", "a", encoding="utf-8", newline="") as f:
        f.writelines(f"{name},,where does this go?\n" for name in names)
    return names


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")
            if skip not in p.parents and p != skip}


def test_hostile_clip_names_cannot_put_a_file_outside_the_workspace(corpus_copy, tmp_path):
    names = hostile_corpus(corpus_copy, tmp_path / "outside")
    ws = tmp_path / "ws"
    before = snapshot(tmp_path, ws)
    code, ingested, text = mersemi("ingest", str(corpus_copy), "-w", str(ws), "--json")
    assert code == 0, text
    code, featured, text = mersemi("features", "-w", str(ws), "--json", "--workers", "1",
                                   "--extractors", "audio_egemaps")
    assert code == 0, text
    # Nothing outside the workspace was created, changed or removed.
    assert snapshot(tmp_path, ws) == before
    # Everything inside it is a plain file or folder under it (no link a later write could follow).
    inside = list(ws.rglob("*"))
    assert inside
    assert [p for p in inside if p.is_symlink() or not p.resolve().is_relative_to(ws.resolve())] == []
    registry = pd.read_parquet(ingested["registry"]).set_index("name")
    for name, what in names.items():
        if name == "linked":
            continue
        assert name not in registry.index or registry.at[name, "status"] == "error", what
    unsafe = registry[registry.index.isin(names) & (registry["status"] == "error")]
    assert unsafe["reason"].str.contains("path separator|control character|'\\.\\.'").all(), unsafe["reason"]
    usable = int(registry["status"].isin(["ok", "degraded"]).sum())
    assert featured["extractors"]["audio_egemaps"]["clips"] == usable
    assert Workspace(ws).catalog.failed_checks() == {}
