"""Faults: the pipeline SIGKILLed inside every stage and run again ends where an uninterrupted
run ends; writes the disk refuses half-way leave the previous state; a second pipeline on a
busy workspace is refused; a teacher in a 429 storm (and 5xx, timeouts, bad answers) still
lets the run finish and records what it could not get.

The killed runs are real `mersemi run` processes (flows/faults.py's MERSEMI_KILL_AT) reporting
to the session's Prefect server."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from prefect.settings import PREFECT_API_URL

from storage.artifacts import ArtifactStore, sha256_bytes
from storage.catalog import Catalog
from storage.records import latest_feature_sets, latest_stage_run, record_probes, resolve_dataset
from storage.teacher_store import run_answers
from storage.workspace import Workspace
from tests.flows.test_cli import dump, mersemi
from tests.models.conftest import KEY
from tests.models.fake_gemini import FakeGeminiServer, answer_text, blocked, error, ok, slow

MERSEMI = str(Path(sys.executable).with_name("mersemi"))
ROOT = Path(__file__).resolve().parents[2]
# The smallest settings that reach every checkpoint: one cheap extractor in shards of 6 clips
# (4 shards), one fusion head, two short mining rounds (the first accepts some clips).
TRAIN = {"folds": 2, "seeds": [0], "epochs": 15, "hidden": 16, "fusions": ["moe"]}
CONFIG = {
    "features": {"workers": 1, "shard_size": 6, "extractors": ["text"]},
    "mine": TRAIN | {"voters": ["moe/final", "moe/fused", "teacher"], "rounds": 2, "policy": "consensus",
                     "target_precision": 0.5},
    "finalize": TRAIN | {"members": ["moe/final"]},
}
# (stages of the run, where it is killed): each run picks up what the killed ones left.
KILLS = [("ingest", "ingest:registry-saved"),
         ("ingest,features", "features:shard-1:cached"),
         ("features", "features:recorded"),
         ("teacher", "teacher:label:asked"),
         ("teacher,mine", "mine:round-2:trained"),
         ("mine,finalize", "finalize:saved")]
PACKAGES = ("flows", "tasks", "models", "storage")


def config_file(folder: Path, corpus: Path) -> Path:
    path = folder / "pipeline.yaml"
    teacher = {"backend": "replay", "answers": str(corpus / "teacher" / "answers.jsonl")}
    path.write_text(yaml.safe_dump(CONFIG | {"teacher": teacher}))
    return path


def code_snapshot(folder: Path) -> Path:
    """A copy of the project's packages for the processes of one test. Mining and finalize runs
    are keyed on the code version (a hash of this source), so an edit of the source tree while
    the test runs would rightly make a new run instead of resuming the killed one."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, folder / package, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def cli_env(code: Path | None = None, **extra: str) -> dict:
    """The environment of a `mersemi` process: this session's Prefect server, no kill point,
    and the code of `code` when given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERSEMI_")}
    return env | {"PREFECT_API_URL": PREFECT_API_URL.value()} | (
        {"PYTHONPATH": str(code)} if code else {}) | extra


def start(args: list[str], log: Path, code: Path | None = None, **env: str) -> subprocess.Popen:
    """A `mersemi` process in its own session, output to files (a pipe would block it)."""
    with open(log.with_suffix(".out"), "w") as out, open(log, "w") as err:
        return subprocess.Popen([MERSEMI, *args], env=cli_env(code, **env), stdout=out, stderr=err,
                                start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 600) -> int:
    try:
        return proc.wait(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def run_pipeline(corpus: Path, ws: Path, cfg: Path, log: Path, stages: str, code: Path, **env) -> int:
    args = ["run", str(corpus), "-w", str(ws), "--config", str(cfg), "--stages", stages, "--json"]
    return finish(start(args, log, code, **env))


def failed_checks(ws: Path, code: Path) -> dict[str, int]:
    """`mersemi check` (the catalog's invariant queries) with the code that wrote the catalog."""
    done = subprocess.run([MERSEMI, "check", "-w", str(ws), "--json"], env=cli_env(code), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])["failed"]


def tail(log: Path) -> str:
    return log.read_text()[-3000:]


# --- what must be equal, and what must never be seen ------------------------------------------

def results(ws: Path) -> dict[str, pd.DataFrame]:
    """A workspace's outcome, without run ids and timestamps: the registry, the feature rows,
    the teacher's answers, every mining decision, the final predictions and the submission."""
    w = Workspace(ws)
    state = resolve_dataset(w.catalog, None)
    out = {"registry": w.artifacts.load(f"{state.registry_artifact_id}.parquet")}
    for fs in latest_feature_sets(w.catalog, state.dataset):
        rows = pd.read_parquet(w.artifacts.root / fs["path"])
        rows["vector"] = rows["vector"].map(lambda v: None if v is None else v.tolist())
        out[f"features/{fs['extractor']}"] = rows.drop(columns=["sequence"])
    teacher, _ = latest_stage_run(w.catalog, "teacher", state.dataset)
    answers = run_answers(w.catalog, teacher)
    out["teacher"] = answers[["clip_id", "question", "outcome", "status", "label", "scores"]]
    finalize, artifacts = latest_stage_run(w.catalog, "finalize", state.dataset)
    with w.catalog.reader() as s:
        out["decisions"] = s.query(
            "SELECT round, clip_id, decision, label, confidence, reason, votes::VARCHAR AS votes, decided_by "
            "FROM clip_decisions ORDER BY round, clip_id")
        out["final"] = s.query("SELECT clip_id, label, confidence, model_label, rules FROM final_predictions "
                               "WHERE run_id = ? ORDER BY clip_id", [finalize])
    (sub,) = [a for a in artifacts if a["name"] == "submission"]
    out["submission"] = pd.read_csv(w.artifacts.root / sub["path"])
    return {k: v.sort_values(list(v.columns[:2])).reset_index(drop=True) for k, v in out.items()}


def assert_store_sound(ws: Path) -> None:
    """No temporary file is left; every Parquet file reads whole; every catalogued artifact has
    the bytes the catalog says; a file the catalog does not know belongs to a run that did not
    complete (a killed run's finished outputs, never half of one)."""
    leftovers = [p for p in ws.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    for path in ws.rglob("*.parquet"):
        pq.read_table(path)
    if not (ws / "catalog.duckdb").exists():
        return
    with Catalog(ws / "catalog.duckdb").reader() as s:
        known = s.query("SELECT path, sha256 FROM artifacts")
        completed = set(s.query("SELECT run_id FROM runs WHERE status = 'completed'")["run_id"])
    for path, digest in zip(known["path"], known["sha256"], strict=True):
        assert sha256_bytes((ws / "artifacts" / path).read_bytes()) == digest, path
    store = ws / "artifacts"
    unknown = {p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file()} - set(known["path"])
    assert not {p.split("/")[0] for p in unknown} & completed, unknown


def recorded(ws: Path, query: str, params: list | None = None) -> pd.DataFrame:
    with Catalog(ws / "catalog.duckdb").reader() as s:
        return s.query(query, params or [])


@pytest.mark.slow
def test_a_pipeline_killed_in_every_stage_ends_as_an_uninterrupted_run(synthetic_corpus, tmp_path):
    cfg, code = config_file(tmp_path, synthetic_corpus), code_snapshot(tmp_path / "code")
    # The uninterrupted run, in its own workspace, alongside the killed ones.
    reference = start(["run", str(synthetic_corpus), "-w", str(tmp_path / "ref"), "--config", str(cfg),
                       "--json"], tmp_path / "ref.log", code)
    try:
        ws = tmp_path / "ws"
        for i, (stages, point) in enumerate(KILLS):
            log = tmp_path / f"killed-{i}.log"
            exit_code = run_pipeline(synthetic_corpus, ws, cfg, log, stages, code, MERSEMI_KILL_AT=point)
            assert exit_code == -signal.SIGKILL, (point, tail(log))
            assert_store_sound(ws)
            assert failed_checks(ws, code) == {}, point
            check_killed_at(ws, point)
        exit_code = run_pipeline(synthetic_corpus, ws, cfg, tmp_path / "last.log", "finalize", code)
        assert exit_code == 0, tail(tmp_path / "last.log")
        assert finish(reference) == 0, tail(tmp_path / "ref.log")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(reference.pid, signal.SIGKILL)

    mine_ran = json.loads((tmp_path / "ref.out").read_text().splitlines()[-1])["mine"]
    assert mine_ran["accepted_per_round"][0] > 0 and len(mine_ran["rounds"]) == 2   # round 2 was reached
    expected, got = results(tmp_path / "ref"), results(ws)
    assert list(got) == list(expected)
    for name in expected:
        pd.testing.assert_frame_equal(got[name], expected[name], obj=name)
    assert_store_sound(ws)
    assert failed_checks(ws, code) == {}
    assert_nothing_recorded_twice(ws, expected)
    versions = [recorded(w, "SELECT DISTINCT code_version FROM runs") for w in (ws, tmp_path / "ref")]
    assert len(pd.concat(versions).drop_duplicates()) == 1                   # all ran the same code


def check_killed_at(ws: Path, point: str) -> None:
    """What a kill at `point` left: the work done so far, and nothing recorded of the rest."""
    runs = recorded(ws, "SELECT run_id, command, status FROM runs ORDER BY started_at")
    last = runs.iloc[-1] if len(runs) else None
    if point == "ingest:registry-saved":
        # The registry file is saved, but the run recorded nothing, so no dataset exists yet.
        assert len(recorded(ws, "SELECT * FROM datasets")) == 0 and len(runs) == 0
        assert len(list((ws / "artifacts").glob("ingest-*/ingest/clips.parquet"))) == 1
    elif point == "features:shard-1:cached":
        assert (last["command"], last["status"]) == ("features", "running")
        assert len(list((ws / "cache" / "features").rglob("*.parquet"))) >= 1
        assert len(recorded(ws, "SELECT * FROM feature_sets")) == 0
    elif point == "features:recorded":
        # Recorded is finished: the feature sets and the run's end are one transaction.
        assert (last["command"], last["status"]) == ("features", "completed")
        assert recorded(ws, "SELECT DISTINCT run_id FROM feature_sets")["run_id"].tolist() == [last["run_id"]]
    elif point == "teacher:label:asked":
        # The paid answers are kept (the next run takes them from the cache); nothing else.
        assert (last["command"], last["status"]) == ("teacher", "running")
        assert len(recorded(ws, "SELECT * FROM teacher_answers WHERE run_id = ?", [last["run_id"]])) == 12
        assert len(recorded(ws, "SELECT * FROM teacher_outcomes")) == 0
    elif point == "mine:round-2:trained":
        assert (last["command"], last["status"]) == ("mine", "running")
        assert recorded(ws, "SELECT DISTINCT round FROM clip_decisions")["round"].tolist() == [1]
    elif point.startswith("finalize:"):
        assert (last["command"], last["status"]) == ("finalize", "running")
        assert len(recorded(ws, "SELECT * FROM final_predictions")) == 0
        saved = list((ws / "artifacts" / last["run_id"] / "finalize").glob("submission.csv"))
        assert len(saved) == (point == "finalize:saved")


def assert_nothing_recorded_twice(ws: Path, expected: dict[str, pd.DataFrame]) -> None:
    runs = recorded(ws, "SELECT run_id, command, status FROM runs")
    assert set(runs["status"]) <= {"completed", "interrupted"}
    broken = runs.loc[runs["status"] != "completed", "run_id"].tolist()
    # A run that did not complete recorded no output (teacher answers aside: they were paid for).
    for table in ("stages", "feature_sets", "teacher_outcomes", "clip_decisions", "final_predictions",
                  "artifacts", "metrics"):
        assert len(recorded(ws, f"SELECT * FROM {table} WHERE run_id IN (SELECT unnest(?))", [broken])) == 0
    # One mining run decided (the killed one, resumed), each clip once per round; one finalize
    # run's predictions; one answer per clip and question.
    decisions = recorded(ws, "SELECT run_id, round, clip_id FROM clip_decisions")
    assert decisions["run_id"].nunique() == 1 and not decisions.duplicated().any()
    assert len(decisions) == len(expected["decisions"])
    final = recorded(ws, "SELECT run_id, clip_id FROM final_predictions")
    assert final["run_id"].nunique() == 1 and len(final) == len(expected["final"])
    answers = recorded(ws, "SELECT clip_id, question FROM teacher_answers")
    assert not answers.duplicated().any() and len(answers) == 12


# --- a write the disk refuses ------------------------------------------------------------------

FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)        # the write fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))
{code}
"""


def run_with_full_disk(code: str, limit: int) -> subprocess.CompletedProcess:
    """Python `code` in a process that may write no file past `limit` bytes: its writes fail
    part-way, as on a full disk (the kernel's EFBIG where a full disk gives ENOSPC)."""
    script = FULL_DISK.format(limit=limit, code=code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


def test_an_artifact_write_that_fails_half_way_keeps_the_previous_file(tmp_path):
    store = ArtifactStore(tmp_path / "artifacts")
    old = store.save(pd.DataFrame({"x": range(10)}), "run-1", "ingest", "clips")
    before = store.path(old).read_bytes()
    code = ("import numpy as np, pandas as pd\nfrom storage.artifacts import ArtifactStore\n"
            f"store = ArtifactStore({str(store.root)!r})\n"
            "frame = pd.DataFrame({'x': np.random.default_rng(0).random(200_000)})\n"
            "store.save(frame, 'run-1', 'ingest', 'clips')\n")
    done = run_with_full_disk(code, limit=64 * 1024)
    assert done.returncode == 1
    assert "File too large while writing" in done.stderr and "clips.parquet" in done.stderr, done.stderr
    assert "the previous file is unchanged" in done.stderr
    assert store.path(old).read_bytes() == before
    assert store.load(old, verify=True)["x"].tolist() == list(range(10))
    assert [p.name for p in store.path(old).parent.iterdir()] == ["clips.parquet"]     # no temporary file


# (rows written, file size limit from the catalog's size): a transaction whose write-ahead log
# cannot be written at the commit, and one big enough that DuckDB writes its row groups to the
# database file while it runs and fails there.
@pytest.mark.parametrize("rows, limit", [(2_000, lambda size: 8 * 1024),
                                         (300_000, lambda size: size + 64 * 1024)],
                         ids=["at-commit", "mid-transaction"])
def test_a_catalog_write_that_fails_half_way_leaves_the_catalog_as_it_was(tmp_path, rows, limit):
    catalog = Catalog(tmp_path / "catalog.duckdb")
    probes = pd.DataFrame({"path": ["/d/a.mp4"], "size": [1], "mtime_ns": [2], "sha256": ["s"],
                           "probe": ['{"ok": true}']})
    record_probes(catalog, probes)
    before = dump(catalog)
    code = ("import pandas as pd\nfrom storage.catalog import Catalog\n"
            "from storage.records import record_probes\n"
            f"n = {rows}\n"
            "frame = pd.DataFrame({'path': [f'/d/{i:09d}.mp4' for i in range(n)], 'size': range(n),\n"
            "                      'mtime_ns': range(n), 'sha256': [f'{i:064d}' for i in range(n)],\n"
            "                      'probe': ['{\"ok\": true}'] * n})\n"
            f"record_probes(Catalog({str(catalog.path)!r}), frame)\n")
    done = run_with_full_disk(code, limit=limit(catalog.path.stat().st_size))
    assert done.returncode == 1
    assert "CatalogError: could not write the catalog" in done.stderr, done.stderr[-2000:]
    assert "File too large" in done.stderr and "rolled back" in done.stderr
    assert dump(catalog) == before and catalog.failed_checks() == {}
    record_probes(catalog, probes.assign(path="/d/b.mp4"))         # and it takes the next write
    with catalog.reader() as s:
        assert s.query("SELECT path FROM media_files ORDER BY 1")["path"].tolist() == ["/d/a.mp4", "/d/b.mp4"]


def test_a_writer_transaction_that_raises_half_way_records_none_of_it(tmp_path):
    catalog = Catalog(tmp_path / "catalog.duckdb")
    catalog.migrate()
    before = dump(catalog)
    with pytest.raises(OSError, match="No space left"), catalog.writer() as s:
        s.run("insert_run", run_id="r1", command="ingest", started_at=pd.Timestamp("2026-01-01"),
              params={}, code_version="x", flow_run_id=None, cache_key=None)
        raise OSError(28, "No space left on device")
    assert dump(catalog) == before


# --- two pipelines on one workspace ------------------------------------------------------------

def test_a_second_pipeline_on_a_busy_workspace_is_refused_naming_the_holder(synthetic_corpus, tmp_path):
    ws, flag = tmp_path / "ws", tmp_path / "held"
    cfg = config_file(tmp_path, synthetic_corpus)
    first = start(["run", str(synthetic_corpus), "-w", str(ws), "--config", str(cfg), "--stages", "ingest",
                   "--json"], tmp_path / "first.log", MERSEMI_HOLD_AT="ingest:registry-saved",
                  MERSEMI_HOLD_FILE=str(flag))
    try:
        deadline = time.monotonic() + 300
        while not flag.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert flag.exists(), tail(tmp_path / "first.log")
        holder = json.loads((ws / "run.lock").read_text())
        code, _, text = mersemi("run", str(synthetic_corpus), "-w", str(ws), "--config", str(cfg),
                                "--stages", "ingest")
        assert code == 3, text
        assert "is in use by another mersemi run" in text and holder["run_id"] in text
        assert f"'pid': {first.pid}" in text or f'"pid": {first.pid}' in text
        # A reader is not refused while the run holds the workspace.
        code, _, text = mersemi("status", "-w", str(ws), "--json")
        assert code == 0, text
        flag.unlink()
        assert finish(first) == 0, tail(tmp_path / "first.log")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
    code, summary, text = mersemi("check", "-w", str(ws), "--json")
    assert code == 0 and summary["failed"] == {}, text
    runs = recorded(ws, "SELECT run_id, status FROM runs")
    assert runs.to_dict("records") == [{"run_id": holder["run_id"], "status": "completed"}]


# --- teacher faults through a whole teacher run ---------------------------------------------

@pytest.fixture
def ingested(synthetic_corpus, tmp_path):
    ws = tmp_path / "ws"
    code, _, text = mersemi("ingest", str(synthetic_corpus), "-w", str(ws), "--name", "syn", "--json")
    assert code == 0, text
    return ws


def test_a_teacher_in_a_429_storm_finishes_with_what_it_has_and_records_the_rest(ingested, monkeypatch):
    ws = ingested
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    with FakeGeminiServer() as fake:
        args = ("teacher", "-w", str(ws), "--base-url", fake.base_url, "--concurrency", "1",
                "--retry-attempts", "2", "--retry-initial-s", "0.001", "--timeout-s", "0.5", "--json")
        # Two answers, a refusal, a malformed answer, a 500 then an answer, a timeout twice;
        # then the quota runs out: every later request gets 429 RESOURCE_EXHAUSTED.
        fake.script.extend([ok(answer_text("happy")), ok(answer_text("sad")), blocked(), ok("{not json"),
                            error(500, "INTERNAL"), ok(answer_text("angry")), slow(2.0), slow(2.0)])
        fake.default = error(429, "RESOURCE_EXHAUSTED")
        code, storm, text = mersemi(*args)
        assert code == 0, text
        assert (storm["answered"], storm["refused"], storm["unparseable"], storm["failed"]) == (3, 1, 1, 7)
        assert storm["requests"] == 4 + 2 + 2 + 6 * 2                      # a failure is tried twice
        catalog = Catalog(ws / "catalog.duckdb")
        outcomes = run_answers(catalog, storm["run_id"])
        assert len(outcomes) == 12 and outcomes["outcome"].value_counts().to_dict() == {
            "failed": 7, "answered": 3, "refused": 1, "unparseable": 1}
        failed = outcomes[outcomes["outcome"] == "failed"]
        assert failed["error"].str.contains("HTTP 429 RESOURCE_EXHAUSTED").sum() == 6
        assert failed["error"].str.contains("timed out").sum() == 1
        assert catalog.failed_checks() == {}
        # The quota is back, within a budget of 4 requests: the cache serves what was paid for,
        # the failed clips are asked again until the budget stops, the rest are not asked.
        fake.default = ok(answer_text("worried"))
        calls = len(fake.generate_calls())
        code, after, text = mersemi(*args[:-1], "--max-requests", "4", "--json")
        assert code == 0, text
        assert len(fake.generate_calls()) - calls == 4
    assert (after["cache_hits"], after["answered"], after["not_asked"]) == (5, 3 + 4, 3)
    assert "request budget of 4" in after["budget_exhausted"]
    outcomes = run_answers(catalog, after["run_id"]).set_index("clip_id")
    assert outcomes["outcome"].value_counts().to_dict() == {"answered": 7, "not_asked": 3, "refused": 1,
                                                            "unparseable": 1}
    assert (outcomes.loc[outcomes["label"] == "worried", "from_cache"] == False).all()   # noqa: E712
    assert catalog.failed_checks() == {}
