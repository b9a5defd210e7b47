"""`mersemi audit` end to end through the CLI: on the hand-built catalog of
tests/storage/test_audit.py (hand-computed answers) and, marked slow, on a mined workspace."""

from __future__ import annotations

import json

import pytest

from storage.catalog import Catalog
from tests.flows.test_cli import mersemi
from tests.flows.test_mine_flow import featured, mined  # noqa: F401, F811  (the slow test's fixtures)
from tests.storage.test_audit import build_catalog, dump


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit-cli")
    build_catalog(root)
    (root / "truth.csv").write_text("name,discrete\nalpha,happy\nbeta,happy\ngamma,sad\ndelta,sad\n")
    return root


def test_audit_commands_answer_as_computed_by_hand(ws):
    w = ("-w", str(ws))
    code, report, text = mersemi("audit", "rounds", *w, "--run", "M1", "--truth", str(ws / "truth.csv"),
                                 "--json")
    assert code == 0, text
    assert [r["accepted"] for r in report["rounds"]] == [2, 1] and report["total"]["precision"] == 0.6667
    code, acc, _ = mersemi("audit", "accepted", *w, "--run", "M1", "--round", "1", "--json")
    assert code == 0 and [c["name"] for c in acc["clips"]] == ["alpha", "delta"]
    assert acc["clips"][0]["votes"]["teacher"] == {"confidence": 0.7, "label": "happy"}
    code, acc, _ = mersemi("audit", "accepted", *w, "--run", "M1", "--limit", "1", "--json")
    assert code == 0 and acc["total"] == 3 and [c["name"] for c in acc["clips"]] == ["alpha"]
    code, _, text = mersemi("audit", "accepted", *w, "--run", "M1", "--limit", "2")
    assert code == 0 and "accepted clips (3)" in text and "1 more: --limit or --json for all" in text
    code, _, text = mersemi("audit", "accepted", *w, "--run", "M1", "--limit", "-1")
    assert code != 0 and "limit must be 0 or more, not -1" in text
    code, diff, _ = mersemi("audit", "diff", *w, "--run", "M1", "--round", "1", "--round", "2", "--json")
    assert code == 0 and diff["counts"] == {"entered": 1, "left": 0, "changed": 0}
    code, dis, _ = mersemi("audit", "disagreements", *w, "--run", "M1", "--round", "1", "--json")
    assert code == 0 and [c["name"] for c in dis["clips"]] == ["gamma", "beta"]
    code, _, text = mersemi("audit", "disagreements", *w, "--run", "M1", "--round", "1", "--limit", "1")
    assert code == 0 and "disagreements (2)" in text and "1 more: --limit or --json for all" in text
    code, _, text = mersemi("audit", "clip", "alpha", *w)
    assert code == 0 and "angry" in text and "rule demote(label=happy,margin=0.1) (run Z1)" in text
    code, _, text = mersemi("audit", "rounds", *w)                       # the newest run, as tables
    assert code == 0 and "mining run M2" in text and "balance" in text


def test_audit_export_writes_label_studio_tasks_and_config(ws, tmp_path):
    out, config = tmp_path / "tasks.json", tmp_path / "config.xml"
    code, summary, text = mersemi("audit", "export", "-w", str(ws), "--run", "M1", "--round", "1",
                                  "--out", str(out), "--config", str(config),
                                  "--media-url", "/data/local-files/?d=", "--json")
    assert code == 0, text
    tasks = json.loads(out.read_text())
    assert summary["tasks"] == 2 and [t["data"]["clip"] for t in tasks] == ["gamma", "beta"]
    assert tasks[0]["data"]["video"] == "/data/local-files/?d=video/gamma.mp4"
    assert '<Choice value="angry"/>' in config.read_text()
    code, _, _ = mersemi("audit", "export", "-w", str(ws), "--run", "M1", "--format", "csv",
                         "--out", str(tmp_path / "tasks.csv"))
    header = (tmp_path / "tasks.csv").read_text().splitlines()[0]
    assert code == 0 and header.startswith("rank,clip,clip_id,video")


def test_audit_errors_injection_and_the_console_cannot_write(ws, tmp_path):
    catalog = Catalog(ws / "catalog.duckdb")
    before = dump(catalog)
    code, _, text = mersemi("audit", "clip", "nobody", "-w", str(ws))
    assert code == 2 and "no clip named 'nobody'" in text
    code, acc, _ = mersemi("audit", "accepted", "-w", str(ws), "--run", "M1", "--label", "x' OR 1=1 --",
                           "--json")
    assert code == 0 and acc["total"] == 0
    code, _, text = mersemi("audit", "sql", "DELETE FROM runs", "-w", str(ws))
    assert code == 2 and "DELETE statements are refused" in text
    code, _, text = mersemi("audit", "sql", f"COPY runs TO '{tmp_path}/runs.csv'", "-w", str(ws))
    assert code == 2 and not (tmp_path / "runs.csv").exists()
    code, rows, _ = mersemi("audit", "sql", "SELECT count(*) AS n FROM runs WHERE command = $c",
                            "-w", str(ws), "--param", "c=mine", "--json")
    assert code == 0 and rows["rows"] == [{"n": 2}]
    assert dump(catalog) == before
    code, _, text = mersemi("audit", "rounds", "-w", str(tmp_path / "empty"))
    assert code == 3 and "no catalog" in text


@pytest.mark.slow
def test_audit_on_a_mined_workspace(mined):  # noqa: F811
    root, summary = mined
    w = ("-w", str(root / "ws"))
    code, report, text = mersemi("audit", "rounds", *w, "--json")
    assert code == 0, text
    assert report["run"]["run_id"] == summary["run_id"]
    assert [r["accepted"] for r in report["rounds"]] == summary["accepted_per_round"]
    assert [r["considered"] for r in report["rounds"]] == [r["pool"] for r in summary["rounds"]]
    code, acc, _ = mersemi("audit", "accepted", *w, "--round", "1", "--json")
    assert code == 0 and acc["total"] == summary["rounds"][0]["accepted"]
    name = acc["clips"][0]["name"]
    code, history, _ = mersemi("audit", "clip", name, *w, "--json")
    assert code == 0 and ("accepted", 1) in [(d["decision"], d["round"]) for d in history["decisions"]]
    assert all(f["status"] in ("ok", "missing", "error") for f in history["features"])
