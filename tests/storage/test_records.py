"""Rows written once per clip, now that no primary key stands guard over clip_decisions and
teacher_outcomes (schema v9): storage.records.record_round, storage.teacher_store.record_teacher_run."""

from __future__ import annotations

import json
from datetime import datetime

import pandas as pd
import pytest

from storage.catalog import CatalogError
from storage.records import record_round, start_run
from storage.teacher_store import record_teacher_run
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


def outcomes(clips: list[str], question: str = "label") -> pd.DataFrame:
    return pd.DataFrame({"clip_id": clips, "question": question, "teacher": "replay",
                         "cache_key": [f"k-{c}" for c in clips], "outcome": "answered",
                         "from_cache": False, "attempts": 1})


def recorded_outcomes(ws: Workspace) -> list:
    with ws.catalog.reader() as s:
        return s.query("SELECT run_id, clip_id, question FROM teacher_outcomes ORDER BY ALL").values.tolist()


def test_a_teacher_runs_outcomes_are_recorded_once(tmp_path):
    ws = Workspace(tmp_path / "ws")
    start_run(ws.catalog, "teacher-1", "teacher", {})
    # The same clip under two questions is two outcomes.
    record_teacher_run(ws.catalog, "teacher-1", T0, [outcomes(["a", "b"]), outcomes(["a"], "enrich")], [],
                       {"pool": 2})
    with pytest.raises(CatalogError, match="teacher run teacher-1's outcomes are already recorded"):
        record_teacher_run(ws.catalog, "teacher-1", T0, [outcomes(["c"])], [], {"pool": 1})
    assert recorded_outcomes(ws) == [["teacher-1", "a", "enrich"], ["teacher-1", "a", "label"],
                                     ["teacher-1", "b", "label"]]
    assert ws.catalog.failed_checks() == {}


def test_a_clip_twice_for_a_question_is_refused_naming_it(tmp_path):
    ws = Workspace(tmp_path / "ws")
    start_run(ws.catalog, "teacher-1", "teacher", {})
    twice = r"teacher run teacher-1 has 1 clip\(s\) with more than one outcome .* 'b' \(label\)"
    with pytest.raises(ValueError, match=twice):
        record_teacher_run(ws.catalog, "teacher-1", T0, [outcomes(["a", "b"]), outcomes(["b"])], [], {})
    assert recorded_outcomes(ws) == []


def test_outcomes_are_read_from_the_runs_parquet_files(tmp_path):
    # The teacher flow hands the run's outcome artifacts (one per question), not frames: a file's
    # other columns (the answers') are not the catalog's, and a clip twice across files is refused.
    ws = Workspace(tmp_path / "ws")
    start_run(ws.catalog, "teacher-1", "teacher", {})
    label, enrich = tmp_path / "label.parquet", tmp_path / "enrich.parquet"
    outcomes(["b", "a"]).assign(reasoning=["r-b", "r-a"]).to_parquet(label)
    outcomes(["a"], "enrich").to_parquet(enrich)
    record_teacher_run(ws.catalog, "teacher-1", T0, [label, str(enrich)], [], {"pool": 2})
    assert recorded_outcomes(ws) == [["teacher-1", "a", "enrich"], ["teacher-1", "a", "label"],
                                     ["teacher-1", "b", "label"]]
    start_run(ws.catalog, "teacher-2", "teacher", {})
    with pytest.raises(ValueError, match=r"teacher run teacher-2 has 1 clip\(s\) .* 'a' \(label\)"):
        record_teacher_run(ws.catalog, "teacher-2", T0, [label, outcomes(["a"])], [], {})
    assert [r for r in recorded_outcomes(ws) if r[0] == "teacher-2"] == []


def test_a_round_is_recorded_from_frames_a_chunk_at_a_time_and_a_clip_twice_across_them_is_refused(tmp_path):
    ws = Workspace(tmp_path / "ws")
    start_run(ws.catalog, "mine-1", "mine", {})
    chunks = [decisions(["a", "b"]), decisions(["c"]).drop(columns="new_clip")]
    record_round(ws.catalog, "mine-1", 1, T0, iter(chunks), "consensus-v2", summary(1))
    with ws.catalog.reader() as s:
        rows = s.query("SELECT clip_id, new_clip, votes FROM clip_decisions ORDER BY clip_id")
    assert rows["clip_id"].tolist() == ["a", "b", "c"]
    assert rows["new_clip"].tolist()[:2] == [True, True] and pd.isna(rows["new_clip"].iloc[2])  # unknown
    assert json.loads(rows["votes"].iloc[2]) == {"teacher": {"label": "happy", "confidence": 0.9}}
    # A clip in two of the frames: the round is rolled back, naming it.
    twice = r"round 2 of run mine-1 decides 1 clip\(s\) more than once, e\.g\. 'b'"
    with pytest.raises(ValueError, match=twice):
        record_round(ws.catalog, "mine-1", 2, T0, iter([decisions(["a", "b"]), decisions(["b", "c"])]),
                     "consensus-v2", summary(2))
    assert recorded(ws)["round"].tolist() == [1, 1, 1]
    with ws.catalog.reader() as s:
        assert s.query("SELECT count(*) AS n FROM stages WHERE round = 2")["n"].iloc[0] == 0
    assert ws.catalog.failed_checks() == {}


def test_a_round_streamed_as_frames_holds_one_frame_at_a_time(tmp_path):
    """The frames are one insert's stream: each is let go once DuckDB has read it. (Registered
    one at a time inside the transaction, DuckDB kept every frame until the commit.)"""
    import pyarrow as pa

    ws = Workspace(tmp_path / "ws")
    start_run(ws.catalog, "mine-1", "mine", {})
    chunk, chunks, seen = 5000, 8, []

    def frames():
        for k in range(chunks):
            ids = [f"c{k}-{i:05d}" for i in range(chunk)]
            votes = pd.array([f'{{"v": "{c}{"x" * 800}"}}' for c in ids], dtype="str")
            frame = decisions(ids).assign(votes=votes)
            seen.append(pa.total_allocated_bytes())
            yield frame

    before = pa.total_allocated_bytes()
    record_round(ws.catalog, "mine-1", 1, T0, frames(), "consensus-v2", summary(1))
    one = chunk * 820                                            # one frame's votes, in bytes
    assert len(seen) == chunks and max(seen) - before < 3 * one, [(s - before) // one for s in seen]
    with ws.catalog.reader() as s:
        assert s.query("SELECT count(*) AS n FROM clip_decisions")["n"][0] == chunk * chunks
