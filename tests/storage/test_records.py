"""storage.records.record_round: a clip is decided once per round, now that no primary key
stands guard over clip_decisions (schema v9)."""

from __future__ import annotations

import json
from datetime import datetime

import pandas as pd
import pytest

from storage.catalog import CatalogError
from storage.records import record_round, start_run
from storage.workspace import Workspace

T0 = datetime(2026, 1, 1, 12, 0, 0)


def decisions(clips: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"clip_id": clips, "decision": "accepted", "label": "happy", "confidence": 0.9,
                         "reason": "consensus: agreed", "new_clip": True,
                         "votes": json.dumps({"teacher": {"label": "happy", "confidence": 0.9}})})


def summary(r: int) -> dict:
    return {"round": r, "accepted": 2, "accepted_by_label": {"happy": 2}, "stopped": None}


def recorded(ws: Workspace) -> pd.DataFrame:
    with ws.catalog.reader() as s:
        return s.query("SELECT run_id, round, clip_id, decision FROM clip_decisions ORDER BY ALL")


def test_a_round_is_recorded_once(tmp_path):
    ws = Workspace(tmp_path / "ws")
    start_run(ws.catalog, "mine-1", "mine", {})
    record_round(ws.catalog, "mine-1", 1, T0, decisions(["a", "b"]), "consensus-v2", summary(1))
    with pytest.raises(CatalogError, match="round 1 of run mine-1 is already recorded"):
        record_round(ws.catalog, "mine-1", 1, T0, decisions(["c"]), "consensus-v2", summary(1))
    # The next round, and the same round of another run, are recorded.
    record_round(ws.catalog, "mine-1", 2, T0, decisions(["c"]), "consensus-v2", summary(2))
    start_run(ws.catalog, "mine-2", "mine", {})
    record_round(ws.catalog, "mine-2", 1, T0, decisions(["a"]), "consensus-v2", summary(1))
    assert recorded(ws).values.tolist() == [["mine-1", 1, "a", "accepted"], ["mine-1", 1, "b", "accepted"],
                                            ["mine-1", 2, "c", "accepted"], ["mine-2", 1, "a", "accepted"]]
    assert ws.catalog.failed_checks() == {}


def test_a_clip_twice_in_a_round_is_refused_naming_it(tmp_path):
    ws = Workspace(tmp_path / "ws")
    start_run(ws.catalog, "mine-1", "mine", {})
    twice = r"round 1 of run mine-1 decides 1 clip\(s\) more than once, e\.g\. 'b'"
    with pytest.raises(ValueError, match=twice):
        record_round(ws.catalog, "mine-1", 1, T0, decisions(["a", "b", "b"]), "consensus-v2", summary(1))
    assert recorded(ws).empty
