"""`mersemi mine` and `mersemi finalize` end to end on the synthetic corpus: rounds, recorded
decisions, the submission, invariants."""

from __future__ import annotations

import json

import pandas as pd
import pytest

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
                                  "--policy", "vote", "--quorum", "3")
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
