"""`mersemi mine` end to end on the synthetic corpus: rounds, recorded decisions, invariants."""

from __future__ import annotations

import json

from storage.catalog import Catalog
from tests.flows.test_cli import mersemi


def test_mine_records_one_decision_per_pool_clip_per_round(corpus_copy, tmp_path):
    ws = str(tmp_path / "ws")
    assert mersemi("ingest", str(corpus_copy), "-w", ws, "--json")[0] == 0
    code, _, text = mersemi("features", "-w", ws, "--json", "--workers", "1",
                            "--extractors", "audio_egemaps,text,visual_face")
    assert code == 0, text
    code, _, text = mersemi("teacher", "-w", ws, "--json", "--backend", "replay",
                            "--answers", str(corpus_copy / "teacher" / "answers.jsonl"))
    assert code == 0, text
    code, summary, text = mersemi("mine", "-w", ws, "--json", "--rounds", "2", "--folds", "2", "--seeds", "0",
                                  "--epochs", "30", "--policy", "vote", "--quorum", "3")
    assert code == 0, text
    rounds = summary["rounds"]
    assert len(rounds) == 2 and rounds[0]["pool"] == 12 and rounds[0]["accepted"] >= 1
    assert rounds[1]["pool"] == 12 - rounds[0]["accepted"]              # accepted clips left the pool
    assert summary["accepted_per_round"] == [r["accepted"] for r in rounds]
    catalog = Catalog(tmp_path / "ws" / "catalog.duckdb")
    assert catalog.failed_checks() == {}
    with catalog.reader() as s:
        per_round = s.query("SELECT round, count(*) AS n, count(DISTINCT clip_id) AS d FROM clip_decisions "
                            "WHERE run_id = ? GROUP BY round ORDER BY round", [summary["run_id"]])
        sample = s.query("SELECT decision, label, reason, votes, decided_by FROM clip_decisions "
                         "WHERE run_id = ? AND round = 1", [summary["run_id"]])
    assert per_round["n"].tolist() == per_round["d"].tolist()          # one decision per clip per round
    assert per_round["n"].iloc[0] == 12
    assert per_round["n"].tolist() == [12, 12 - rounds[0]["accepted"]]
    assert (sample["decided_by"] == "vote-v1").all()
    assert sample["reason"].str.startswith("vote:").all()
    votes = json.loads(sample["votes"].iloc[0])
    assert "moe/final" in votes and set(votes["moe/final"]) == {"label", "confidence"}
    accepted = sample[sample["decision"] == "accepted"]
    assert len(accepted) == rounds[0]["accepted"] and accepted["label"].notna().all()
