"""storage/report_data.py on a small workspace written through the flows' own record functions
(record_ingest, record_round, record_finalize): hand-made decisions, votes and out-of-fold
frames, so that every expected count is computed by hand."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from storage.audit import load_truth
from storage.records import finish_run, record_finalize, record_ingest, record_round, start_run
from storage.report_data import report_data
from storage.workspace import Workspace

LABELS = ("happy", "sad", "angry")
T0 = datetime(2026, 1, 1, 12, 0, 0)


def registry() -> pd.DataFrame:
    """h1..h4 labelled and usable, h5 labelled but unusable, c1..c5 candidates."""
    rows = [("h1", "train", "happy", "ok"), ("h2", "train", "happy", "ok"),
            ("h3", "train", "sad", "degraded"), ("h4", "train", "angry", "ok"),
            ("h5", "train", "sad", "error")]
    rows += [(f"c{i}", "candidate", None, "ok") for i in range(1, 6)]
    return pd.DataFrame({
        "clip_id": [f"tiny/{n}" for n, *_ in rows], "dataset": "tiny", "name": [n for n, *_ in rows],
        "split": [r[1] for r in rows], "label": [r[2] for r in rows], "video_path": None,
        "audio_path": None, "text": None, "video_sha256": None, "audio_sha256": None,
        "duration_s": 1.0, "has_video": True, "has_audio": True, "has_text": True,
        "status": [r[3] for r in rows], "reason": None})


def decisions(rows: list[tuple]) -> pd.DataFrame:
    """(clip, decision, label, {voter: label}) -> the frame record_round takes."""
    return pd.DataFrame({
        "clip_id": [f"tiny/{c}" for c, *_ in rows], "decision": [r[1] for r in rows],
        "label": [r[2] for r in rows], "confidence": 0.5, "reason": "hand-made", "new_clip": True,
        "votes": [json.dumps({v: {"label": lab, "confidence": 0.5} for v, lab in r[3].items()})
                  for r in rows]})


def oof(probs: dict[tuple[str, int], tuple[float, float, float]], fusion="moe", head="final") -> pd.DataFrame:
    """(clip, seed) -> (p_happy, p_sad, p_angry) as an out-of-fold frame."""
    frame = pd.DataFrame([{"clip_id": f"tiny/{c}", "head": head, "fusion": fusion, "seed": s, "fold": 0,
                           **{f"p_{lab}": p for lab, p in zip(LABELS, ps, strict=True)}}
                          for (c, s), ps in probs.items()])
    return frame


def summary(r: int, pool: int, accepted: dict, cv: float, stopped=None) -> dict:
    return {"round": r, "dataset": "tiny", "pool": pool, "accepted": sum(accepted.values()),
            "accepted_by_label": accepted, "cv_weighted_f1": cv, "thresholds": {},
            "estimate": {"temperature": 1.5, "teacher_accuracy": {}}, "stopped": stopped}


def build_workspace(root: Path) -> Workspace:
    """Ingest, an older one-round mining run without a teacher (mine-a), a two-round one with a
    teacher (mine-b) and the finalize run built on mine-b."""
    ws = Workspace(root)
    reg = registry()
    ref = ws.artifacts.save(reg, "ingest-x", "ingest", "clips")
    record_ingest(ws.catalog, "ingest-x", T0, {}, "tiny", str(root), "manifest", LABELS, ref, reg,
                  pd.DataFrame(), {"dataset": "tiny"})
    start_run(ws.catalog, "mine-a", "mine", {"rounds": 1})
    record_round(ws.catalog, "mine-a", 1, T0,
                 decisions([("c1", "rejected", "happy", {"moe/final": "happy"})]),
                 "vote-v2", summary(1, 5, {}, 0.4, stopped="nothing accepted"))
    finish_run(ws.catalog, "mine-a", "completed")
    start_run(ws.catalog, "mine-b", "mine", {"rounds": 2, "baseline": "moe/final"})
    r1 = oof({("h1", 0): (.8, .1, .1), ("h1", 1): (.6, .3, .1), ("h2", 0): (.2, .7, .1),
              ("h2", 1): (.2, .7, .1), ("h3", 0): (.1, .8, .1), ("h3", 1): (.3, .6, .1),
              ("h4", 0): (.1, .1, .8), ("h4", 1): (.1, .1, .8)})
    refs = [ws.artifacts.save(r1, "mine-b", "round-1", "oof")]
    record_round(ws.catalog, "mine-b", 1, T0, decisions([
        ("c1", "accepted", "happy", {"moe/final": "happy", "teacher": "happy"}),
        ("c2", "accepted", "sad", {"moe/final": "sad", "teacher": "sad"}),
        ("c3", "rejected", "happy", {"moe/final": "happy", "teacher": "angry"}),
        ("c4", "rejected", None, {"moe/final": "angry"}),
        ("c5", "rejected", "sad", {"moe/final": "sad", "teacher": "sad"})]),
        "vote-v2", summary(1, 5, {"happy": 1, "sad": 1}, 0.7333), refs=refs)
    # Round 2 also trained on the pseudo-labelled c1: its OOF row must not count.
    r2 = oof({("h1", 0): (.9, .05, .05), ("h2", 0): (.9, .05, .05), ("h3", 0): (.1, .8, .1),
              ("h4", 0): (.1, .1, .8), ("c1", 0): (.1, .1, .8)})
    refs = [ws.artifacts.save(r2, "mine-b", "round-2", "oof")]
    record_round(ws.catalog, "mine-b", 2, T0, decisions([
        ("c3", "rejected", "happy", {"moe/final": "happy", "teacher": "angry"}),
        ("c4", "rejected", "angry", {"moe/final": "angry"}),
        ("c5", "accepted", "sad", {"moe/final": "sad", "teacher": "sad"})]),
        "vote-v2", summary(2, 3, {"sad": 1}, 1.0), refs=refs)
    finish_run(ws.catalog, "mine-b", "completed")
    build_finalize(ws)
    return ws


def build_finalize(ws: Workspace) -> None:
    start_run(ws.catalog, "finalize-b", "finalize", {"members": ["moe/final"], "ensemble": "soft"})
    final = pd.DataFrame({"clip_id": ["tiny/c3", "tiny/c4"], "label": ["angry", "angry"], "confidence": .6,
                          "model_label": ["happy", "angry"], "rules": ["demote(label=happy,margin=0.1)", ""]})
    changes = pd.DataFrame({"clip_id": ["tiny/c3"], "step": [0], "rule": ["demote(label=happy,margin=0.1)"],
                            "before": ["happy"], "after": ["angry"], "detail": ["margin 0.05"]})
    flags = pd.DataFrame({"clip_id": ["tiny/h2"], "label": ["happy"], "alternative": ["sad"],
                          "n_sources": [3], "sources": [json.dumps({"teacher": {"label": "sad"}})],
                          "action": ["flagged"], "weight": [1.0]})
    fo = oof({("h1", 0): (.7, .2, .1), ("h2", 0): (.6, .3, .1), ("h3", 0): (.2, .7, .1),
              ("h4", 0): (.5, .1, .4)})
    refs = [ws.artifacts.save(fo, "finalize-b", "final", "oof")]
    record_finalize(ws.catalog, "finalize-b", T0 + timedelta(hours=1), final, changes, flags, refs, [],
                    {"dataset": "tiny", "run_id": "finalize-b", "mine_run": "mine-b"})


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    return build_workspace(tmp_path_factory.mktemp("report") / "ws")


@pytest.fixture(scope="module")
def truth_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("truth") / "truth.csv"
    path.write_text("name,discrete\nc1,happy\nc2,angry\nc5, SAD\nc3,angry\nc4,sad\n")
    return path


@pytest.fixture(scope="module")
def data(workspace):
    """The report data of the newest mining run, gathered once for the tests that only read it."""
    return report_data(workspace.root)


def test_newest_mining_run_with_its_finalize_run(data):
    assert (data.dataset, data.labels, data.mine_run, data.finalize_run) == ("tiny", LABELS, "mine-b",
                                                                            "finalize-b")
    assert data.runs["run_id"].tolist() == ["mine-b", "finalize-b"]
    assert data.runs["params"].iloc[0] == {"rounds": 2, "baseline": "moe/final"}
    assert data.members == ("moe/final",)
    assert data.rounds[["round", "pool", "accepted"]].values.tolist() == [[1, 5, 2], [2, 3, 1]]
    assert data.rounds["cv_weighted_f1"].tolist() == [0.7333, 1.0]
    assert data.rounds["temperature"].tolist() == [1.5, 1.5]
    assert data.human["name"].tolist() == ["h1", "h2", "h3", "h4"]          # h5 is unusable
    assert data.accepted[["clip_id", "round"]].values.tolist() == [["tiny/c1", 1], ["tiny/c2", 1],
                                                                   ["tiny/c5", 2]]
    counts = {(r.round, r.label if isinstance(r.label, str) else None, r.decision): r.n
              for r in data.decisions.itertuples()}
    assert counts == {(1, "happy", "accepted"): 1, (1, "happy", "rejected"): 1, (1, "sad", "accepted"): 1,
                      (1, "sad", "rejected"): 1, (1, None, "rejected"): 1, (2, "happy", "rejected"): 1,
                      (2, "angry", "rejected"): 1, (2, "sad", "accepted"): 1}
    assert len(data.votes) == 5 + 4 + 2 + 2 + 1                              # one row per vote cast
    assert set(data.votes.loc[data.votes["clip_id"] == "tiny/c3", "label"]) == {"happy", "angry"}
    assert data.notes == ["no truth file was given: the precision of the accepted pseudo-labels and "
                          "the test confusion matrix are not shown"]


def test_oof_is_seed_averaged_over_human_clips_in_stage_order(data):
    assert list(data.oof) == ["round-1", "round-2", "final"]
    r1 = data.oof["round-1"].set_index("clip_id")
    assert r1.loc["tiny/h1", "p_happy"] == pytest.approx(0.7)                # (0.8 + 0.6) / 2
    assert r1.loc["tiny/h3", "p_sad"] == pytest.approx(0.7)
    assert "tiny/c1" not in set(data.oof["round-2"]["clip_id"])               # pseudo-labelled: left out
    assert len(data.oof["final"]) == 4


def test_finalize_part_counts_rules_and_flags(data):
    assert data.final[["name", "label", "model_label"]].values.tolist() == [["c3", "angry", "happy"],
                                                                           ["c4", "angry", "angry"]]
    assert data.rule_changes[["rule", "before", "after", "n"]].values.tolist() == [
        ["demote(label=happy,margin=0.1)", "happy", "angry", 1]]
    assert data.label_flags[["label", "alternative", "action", "n"]].values.tolist() == [
        ["happy", "sad", "flagged", 1]]


def test_older_run_without_finalize_or_teacher_says_so(workspace):
    data = report_data(workspace.root, mine_run_id="mine-a")
    assert data.finalize_run is None and data.final is None and data.oof == {}
    assert any("no completed finalize run is built on mining run mine-a" in n for n in data.notes)
    assert any("no teacher voted" in n for n in data.notes)


def test_truth_gives_precision_per_round_and_label_and_test_predictions(workspace, truth_csv):
    assert load_truth(truth_csv)["label"].tolist() == ["happy", "angry", "sad", "angry", "sad"]
    data = report_data(workspace.root, truth=truth_csv)
    assert data.truth_accepted.values.tolist() == [[1, "happy", 1, 1], [1, "sad", 1, 0], [2, "sad", 1, 1]]
    assert data.truth_final[["name", "truth", "label"]].values.tolist() == [["c3", "angry", "angry"],
                                                                           ["c4", "sad", "angry"]]


def test_bad_inputs_are_refused_with_a_reason(workspace, tmp_path):
    with pytest.raises(ValueError, match="'mine-x' is not a mining run"):
        report_data(workspace.root, mine_run_id="mine-x")
    bad = tmp_path / "bad.csv"
    bad.write_text("name,label\nc1,happy\n")
    with pytest.raises(ValueError, match="lacks column"):
        report_data(workspace.root, truth=bad)
    with pytest.raises(ValueError, match="no dataset is ingested"):
        report_data(tmp_path / "empty")
