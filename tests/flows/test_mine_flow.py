"""`mersemi mine` and `mersemi finalize` end to end on the synthetic corpus: rounds, recorded
decisions, the submission, invariants."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

import pandas as pd
import pytest
from prefect.settings import PREFECT_API_URL

from storage.catalog import Catalog
from tests.flows.test_cli import mersemi

FAST = ("--folds", "2", "--seeds", "0", "--epochs", "30")


@pytest.fixture(scope="module")
def featured(tmp_path_factory, synthetic_corpus):
    """A workspace with the synthetic corpus ingested, three feature sets and the teacher's answers."""
    root = tmp_path_factory.mktemp("mine")
    ws = str(root / "ws")
    assert mersemi("ingest", str(synthetic_corpus), "-w", ws, "--json")[0] == 0
    code, _, text = mersemi("features", "-w", ws, "--json", "--workers", "1",
                            "--extractors", "audio_egemaps,text,visual_face")
    assert code == 0, text
    code, _, text = mersemi("teacher", "-w", ws, "--json", "--backend", "replay",
                            "--answers", str(synthetic_corpus / "teacher" / "answers.jsonl"))
    assert code == 0, text
    return root


@pytest.fixture(scope="module")
def mined(featured):
    code, summary, text = mersemi("mine", "-w", str(featured / "ws"), "--json", "--rounds", "2", *FAST,
                                  "--policy", "vote", "--quorum", "3", "--target-precision", "0.6")
    assert code == 0, text
    return featured, summary


def test_finalize_needs_a_mining_run(featured):
    code, _, text = mersemi("finalize", "-w", str(featured / "ws"), *FAST)
    assert code == 2 and "no completed mining run: run `mersemi mine` first" in text


def test_mine_records_one_decision_per_pool_clip_per_round(mined):
    root, summary = mined
    rounds = summary["rounds"]
    assert len(rounds) == 2 and rounds[0]["pool"] == 12 and rounds[0]["accepted"] >= 1
    assert rounds[1]["pool"] == 12 - rounds[0]["accepted"]              # accepted clips left the pool
    assert summary["accepted_per_round"] == [r["accepted"] for r in rounds]
    catalog = Catalog(root / "ws" / "catalog.duckdb")
    assert catalog.failed_checks() == {}
    with catalog.reader() as s:
        per_round = s.query("SELECT round, count(*) AS n, count(DISTINCT clip_id) AS d FROM clip_decisions "
                            "WHERE run_id = ? GROUP BY round ORDER BY round", [summary["run_id"]])
        sample = s.query("SELECT decision, label, reason, votes, decided_by FROM clip_decisions "
                         "WHERE run_id = ? AND round = 1", [summary["run_id"]])
    assert per_round["n"].tolist() == per_round["d"].tolist()          # one decision per clip per round
    assert per_round["n"].iloc[0] == 12
    assert per_round["n"].tolist() == [12, 12 - rounds[0]["accepted"]]
    assert (sample["decided_by"] == "vote-estimated-v2").all()
    assert sample["reason"].str.startswith("vote:").all()
    votes = json.loads(sample["votes"].iloc[0])
    assert "moe/final" in votes and set(votes["moe/final"]) == {"label", "confidence"}
    accepted = sample[sample["decision"] == "accepted"]
    assert len(accepted) == rounds[0]["accepted"] and accepted["label"].notna().all()


def test_finalize_writes_a_submission_for_every_candidate_and_records_why(mined, synthetic_corpus):
    root, mine_summary = mined
    ws = root / "ws"
    code, summary, text = mersemi("finalize", "-w", str(ws), "--json", *FAST, "--refine", "down-weight",
                                  "--rule", "demote:label=worried,margin=0.2", "--force-rules",
                                  "--out", str(root / "sub.csv"))
    assert code == 0, text
    assert summary["mine_run"] == mine_summary["run_id"]
    assert summary["n_pseudo"] == mine_summary["accepted_total"]
    sub = pd.read_csv(summary["submission"])
    candidates = pd.read_csv(synthetic_corpus / "track_all_candidates.csv")
    assert sorted(sub["name"]) == sorted(candidates["name"]) and sub["discrete"].notna().all()
    assert pd.read_csv(root / "sub.csv").equals(sub)
    assert [r["rule"] for r in summary["rules"]] == ["demote(label=worried,margin=0.2)"]
    catalog = Catalog(ws / "catalog.duckdb")
    assert catalog.failed_checks() == {}
    with catalog.reader() as s:
        final = s.query("SELECT f.*, c.name FROM final_predictions f JOIN clips c USING (clip_id) "
                        "WHERE run_id = ?", [summary["run_id"]])
        changes = s.query("SELECT * FROM rule_changes WHERE run_id = ?", [summary["run_id"]])
        flags = s.query("SELECT * FROM label_flags WHERE run_id = ?", [summary["run_id"]])
        human = s.query("SELECT count(*) AS n FROM clips WHERE split = 'train' AND label IS NOT NULL")
    assert len(final) == summary["predicted"] == len(sub) - summary["fallback"]
    by_name = sub.set_index("name")["discrete"]
    assert (final["label"].to_numpy() == by_name.loc[final["name"]].to_numpy()).all()
    moved = final[final["label"] != final["model_label"]]
    assert sorted(moved["clip_id"]) == sorted(changes["clip_id"])
    assert (changes["rule"] == "demote(label=worried,margin=0.2)").all()
    assert (changes["before"] == "worried").all()
    assert len(flags) == summary["flagged_labels"] and (flags["action"] == "down-weighted").all()
    assert human["n"].iloc[0] > 0


def test_same_inputs_and_parameters_reuse_the_finished_runs(mined):
    root, first = mined
    ws = str(root / "ws")
    # More fitting processes compute the same run: it is reused, not keyed anew.
    code, again, text = mersemi("mine", "-w", ws, "--json", "--rounds", "2", *FAST, "--policy", "vote",
                                "--quorum", "3", "--target-precision", "0.6", "--workers", "2")
    assert code == 0, text
    assert again["cached"] is True and again["run_id"] == first["run_id"]
    assert again["accepted_per_round"] == first["accepted_per_round"]
    # Fewer pseudo-labels an epoch train other models: a new run.
    code, changed, _ = mersemi("mine", "-w", ws, "--json", "--rounds", "2", *FAST, "--policy", "vote",
                               "--quorum", "3", "--target-precision", "0.6", "--pseudo-ratio", "0.5")
    assert code == 0 and changed["cached"] is False and changed["run_id"] != first["run_id"]
    code, _, text = mersemi("mine", "-w", ws, "--json", *FAST, "--pseudo-ratio", "lots")
    assert code == 2 and "--pseudo-ratio 'lots': give a number" in text


def run_cli(args: list[str], env, log) -> int:
    """Run a mersemi command in its own session, output to files (a killed process may leave
    its embedded Prefect server behind holding pipes: files and a group kill end both)."""
    with open(f"{log}.out", "w") as out, open(log, "w") as err:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=err, start_new_session=True)
        try:
            return proc.wait(timeout=600)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def test_a_mining_run_killed_mid_round_resumes_without_deciding_twice(featured):
    ws = featured / "ws"
    args = [sys.executable, "-m", "flows.cli", "mine", "-w", str(ws), "--json", "--rounds", "3",
            "--folds", "2", "--seeds", "0", "--epochs", "25", "--policy", "consensus",
            "--target-precision", "0.5"]
    # The session's Prefect server, not a temporary one per process (slow to start on a busy machine).
    served = os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value()}
    killed = run_cli(args, served | {"MERSEMI_KILL_AT": "mine:round-2:trained"}, featured / "killed.log")
    assert killed == -signal.SIGKILL, (featured / "killed.log").read_text()[-2000:]
    catalog = Catalog(ws / "catalog.duckdb")
    with catalog.reader() as s:
        run = s.query("SELECT run_id, status FROM runs WHERE command = 'mine' "
                      "ORDER BY started_at DESC LIMIT 1")
        run_id = run["run_id"].iloc[0]
        before = s.query("SELECT * FROM clip_decisions WHERE run_id = ? ORDER BY ALL", [run_id])
    assert run["status"].iloc[0] == "running" and set(before["round"]) == {1}   # round 2 never recorded
    resumed = run_cli(args, served, featured / "resumed.log")
    assert resumed == 0, (featured / "resumed.log").read_text()[-2000:]
    summary = json.loads((featured / "resumed.log.out").read_text().strip().splitlines()[-1])
    assert summary["run_id"] == run_id and summary["resumed_after_round"] == 1
    assert catalog.failed_checks() == {}
    with catalog.reader() as s:
        after = s.query("SELECT * FROM clip_decisions WHERE run_id = ? ORDER BY ALL", [run_id])
        status = s.query("SELECT status FROM runs WHERE run_id = ?", [run_id])["status"].iloc[0]
    assert status == "completed"
    pd.testing.assert_frame_equal(after[after["round"] == 1].reset_index(drop=True), before)  # kept as is
    rounds = summary["rounds"]
    assert [r["round"] for r in rounds] == list(range(1, len(rounds) + 1)) and len(rounds) >= 2
    per_round = after.groupby("round")["clip_id"].agg(["count", "nunique"])
    assert (per_round["count"] == per_round["nunique"]).all()                  # nothing decided twice
    accepted = after[after["decision"] == "accepted"]
    assert accepted["clip_id"].is_unique                                         # nor accepted twice
