"""The `mersemi` commands, run in-process through Prefect against a temporary server."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from flows.cli import app
from storage.catalog import Catalog
from storage.workspace import Workspace

runner = CliRunner()


def mersemi(*args: str) -> tuple[int, dict | None, str]:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    payload = None
    if "--json" in args and result.exit_code == 0:
        payload = json.loads(result.stdout.strip().splitlines()[-1])
    return result.exit_code, payload, result.stdout + result.stderr


def dump(catalog: Catalog) -> dict:
    with catalog.reader() as s:
        tables = s.query("SELECT table_name FROM information_schema.tables ORDER BY 1")
        return {t: s.query(f'SELECT * FROM "{t}" ORDER BY ALL').to_json(orient="records", date_format="iso")
                for t in tables["table_name"]}


def test_ingest_json_summary_and_idempotent_rerun(corpus_copy, tmp_path):
    ws = tmp_path / "ws"
    code, summary, _ = mersemi("ingest", str(corpus_copy), "--workspace", str(ws), "--json")
    assert code == 0
    assert summary["registered"] == 24 and summary["ok"] == 24 and summary["errors"] == 0
    assert summary["by_split"] == {"candidate": 12, "train": 12}
    assert summary["changed"] is True and summary["run_id"].startswith("ingest-")
    catalog = Catalog(ws / "catalog.duckdb")
    assert catalog.failed_checks() == {}
    before = dump(catalog)
    code, again, _ = mersemi("ingest", str(corpus_copy), "--workspace", str(ws), "--json")
    assert code == 0 and again["changed"] is False and again["probed_files"] == 0
    assert again["registry"] == summary["registry"]
    assert dump(catalog) == before                       # nothing in the catalog changed


def test_reingest_marks_removed_clips_and_dates_new_ones(corpus_copy, tmp_path):
    ws = tmp_path / "ws"
    _, first, _ = mersemi("ingest", str(corpus_copy), "-w", str(ws), "--json")
    cands = (corpus_copy / "track_all_candidates.csv").read_text().splitlines()
    dropped = cands[1]
    (corpus_copy / "track_all_candidates.csv").write_text("\n".join([cands[0], *cands[2:]]) + "\n")
    code, second, _ = mersemi("ingest", str(corpus_copy), "-w", str(ws), "--json")
    assert code == 0 and second["changed"] and second["registered"] == 23
    with Catalog(ws / "catalog.duckdb").reader() as s:
        clips = s.query("SELECT name, status, reason, first_seen_run, last_changed_run FROM clips")
    gone = clips.set_index("name").loc[dropped]
    assert gone["status"] == "removed" and "no longer listed" in gone["reason"]
    assert gone["last_changed_run"] == second["run_id"]
    kept = clips[clips["name"] != dropped]
    assert (kept["first_seen_run"] == first["run_id"]).all()
    assert (kept["last_changed_run"] == first["run_id"]).all()


def test_ingest_human_output_names_bad_clips(corpus_copy, tmp_path):
    name = (corpus_copy / "track_all_candidates.csv").read_text().splitlines()[1]
    (corpus_copy / "audio" / f"{name}.wav").write_bytes(b"")
    code, _, text = mersemi("ingest", str(corpus_copy), "-w", str(tmp_path / "ws"))
    assert code == 0
    assert "degraded" in text and "audio file is empty" in text


def test_unusable_layout_exits_2_with_the_reason(tmp_path):
    code, _, text = mersemi("ingest", str(tmp_path / "missing"), "-w", str(tmp_path / "ws"))
    assert code == 2
    assert "does not exist" in text
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "track1_train_disdim.csv").write_text("name,emotion\nx,happy\n")
    code, _, text = mersemi("ingest", str(tmp_path / "d"), "-w", str(tmp_path / "ws"))
    assert code == 2 and "lacks column(s) discrete" in text


def test_bad_parameters_exit_2(corpus_copy, tmp_path):
    code, _, text = mersemi("ingest", str(corpus_copy), "-w", str(tmp_path / "ws"),
                            "--labels", "happy")
    assert code == 2 and "at least two labels" in text


def test_busy_workspace_is_refused_with_who_holds_it(corpus_copy, tmp_path):
    ws = Workspace(tmp_path / "ws")
    with ws.exclusive("mine-run"):
        code, _, text = mersemi("ingest", str(corpus_copy), "-w", str(ws.root))
    assert code == 3
    assert "in use by another mersemi run" in text and "mine-run" in text


def test_workspace_from_environment(corpus_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("MERSEMI_WORKSPACE", str(tmp_path / "envws"))
    code, summary, _ = mersemi("ingest", str(corpus_copy), "--json")
    assert code == 0 and summary["workspace"] == str(tmp_path / "envws")
    assert (tmp_path / "envws" / "catalog.duckdb").is_file()


def test_status_and_check(corpus_copy, tmp_path):
    ws = str(tmp_path / "ws")
    mersemi("ingest", str(corpus_copy), "-w", ws, "--json")
    code, status, _ = mersemi("status", "-w", ws, "--json")
    assert code == 0
    assert {(r["split"], r["status"], r["n_clips"]) for r in status["clips"]} == {
        ("candidate", "ok", 12), ("train", "ok", 12)}
    assert status["runs"][0]["command"] == "ingest"
    code, checks, _ = mersemi("check", "-w", ws, "--json")
    assert code == 0 and checks["failed"] == {} and len(checks["checks"]) >= 5


def test_status_without_catalog_is_a_clear_error(tmp_path):
    code, _, text = mersemi("status", "-w", str(tmp_path / "empty"))
    assert code == 3 and "no catalog at" in text


@pytest.mark.slow
def test_demo_says_it_is_synthetic(tmp_path):
    code, summary, _ = mersemi("demo", "--out", str(tmp_path / "corpus"), "-w",
                               str(tmp_path / "ws"), "--json")
    assert code == 0
    assert summary["synthetic"] is True and "SYNTHETIC" in summary["notice"]
    assert summary["ingest"]["registered"] == summary["corpus_counts"]["clips"] == 48
    assert summary["ingest"]["errors"] == 0
    assert summary["stages"] == ["ingest", "features", "teacher", "mine", "finalize"]
    assert summary["finalize"]["candidates"] == 24 and summary["finalize"]["fallback"] == 0
    assert summary["finalize"]["mine_run"] == summary["mine"]["run_id"]
    assert summary["mine"]["accepted_total"] >= 1
    import pandas as pd
    assert len(pd.read_csv(summary["finalize"]["submission"])) == 24
    assert all(e["clips"] == 48 for e in summary["features"]["extractors"].values())
    assert summary["teacher"]["answered"] == 24 and summary["teacher"]["requests"] == 24
    assert "SYNTHETIC" in (tmp_path / "corpus" / "README.txt").read_text()


def test_a_run_left_running_by_a_dead_process_is_marked_interrupted(corpus_copy, tmp_path):
    from storage.catalog import now
    from storage.records import start_run

    ws = tmp_path / "ws"
    mersemi("ingest", str(corpus_copy), "-w", str(ws), "--json")
    catalog = Catalog(ws / "catalog.duckdb")
    start_run(catalog, "features-dead", "features", {}, None)     # as if killed with SIGKILL
    with catalog.reader() as s:
        assert s.query("SELECT status FROM runs WHERE run_id = 'features-dead'")["status"][0] == "running"
    corpus_copy.joinpath("track_all_candidates.csv").write_text(
        "\n".join(corpus_copy.joinpath("track_all_candidates.csv").read_text().splitlines()[:-1]) + "\n")
    _, summary, _ = mersemi("ingest", str(corpus_copy), "-w", str(ws), "--json")
    with catalog.reader() as s:
        row = s.query("SELECT status, error, finished_at FROM runs WHERE run_id = 'features-dead'")
    assert row["status"][0] == "interrupted" and summary["run_id"] in row["error"][0]
    assert row["finished_at"][0] <= now()
    assert catalog.failed_checks() == {}
