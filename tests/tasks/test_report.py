"""tasks/report.py: scores and counts of a hand-made ReportData, the self-contained HTML, the
file it writes, and (when chromium is installed) that a browser opens it."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from storage.report_data import ReportData
from tasks.report import (
    SECTIONS,
    acceptance,
    build_report,
    build_report_file,
    class_balance,
    head_f1,
    report_markdown,
    scores,
    teacher_agreement,
    write_report,
)

LABELS = ("happy", "sad", "angry")
EVIL = "demote(label=<script>alert('x')</script>&co)"


def oof(rows: dict[str, tuple[float, float, float]], fusion: str, head: str) -> pd.DataFrame:
    return pd.DataFrame([{"clip_id": c, "fusion": fusion, "head": head,
                          **{f"p_{lab}": p for lab, p in zip(LABELS, ps, strict=True)}}
                         for c, ps in rows.items()])


def votes(rows: list[tuple[int, str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["round", "clip_id", "voter", "label"]).assign(confidence=0.5)


def make_data() -> ReportData:
    """Two rounds, a teacher, a finalize run, a truth file; expectations computed by hand below."""
    right = {"h1": (.7, .2, .1), "h2": (.6, .3, .1), "h3": (.1, .8, .1), "h4": (.1, .2, .7)}
    h2_wrong = right | {"h2": (.3, .6, .1)}                       # round 1: h2 (happy) predicted sad
    all_happy = {c: (.8, .1, .1) for c in right}
    runs = pd.DataFrame({"run_id": ["mine-b", "finalize-b"], "command": ["mine", "finalize"],
                         "status": "completed", "started_at": pd.Timestamp("2026-01-01"),
                         "finished_at": pd.Timestamp("2026-01-01 01:00"), "code_version": "0.1.0+abc",
                         "flow_run_id": None, "error": None,
                         "params": [{"baseline": "moe/final"},
                                    {"members": ["moe/final"], "ensemble": "soft"}]})
    return ReportData(
        workspace="/ws", dataset="tiny<&>", labels=LABELS, mine_run="mine-b", finalize_run="finalize-b",
        runs=runs,
        rounds=pd.DataFrame({"round": [1, 2], "pool": [9, 5], "accepted": [3, 1], "cv_weighted_f1": [.75, .8],
                             "stopped": [None, None], "temperature": [1.2, 1.1]}),
        decisions=pd.DataFrame([(1, "happy", "accepted", 3), (1, "happy", "rejected", 1),
                                (1, "sad", "accepted", 0), (1, "sad", "rejected", 4),
                                (1, None, "rejected", 1),
                                (2, "angry", "accepted", 1), (2, "angry", "rejected", 1)],
                               columns=["round", "label", "decision", "n"]),
        votes=votes([(1, "c1", "moe/final", "happy"), (1, "c1", "attention/final", "happy"),
                     (1, "c1", "teacher", "happy"), (1, "c2", "moe/final", "happy"),
                     (1, "c2", "attention/final", "sad"), (1, "c2", "teacher", "happy"),
                     (1, "c3", "moe/final", "happy"), (1, "c3", "attention/final", "happy"),
                     (1, "c3", "teacher", "sad"), (1, "c5", "moe/final", "sad"),
                     (2, "c4", "moe/final", "angry"), (2, "c4", "attention/final", "angry"),
                     (2, "c4", "teacher", "angry")]),
        human=pd.DataFrame({"clip_id": ["h1", "h2", "h3", "h4"], "name": ["h1", "h2", "h3", "h4"],
                            "label": ["happy", "happy", "sad", "angry"]}),
        accepted=pd.DataFrame({"clip_id": ["c1", "c2", "c3", "c4"], "label": ["happy"] * 3 + ["angry"],
                               "confidence": .9, "round": [1, 1, 1, 2]}),
        oof={"round-1": oof(h2_wrong, "moe", "final"),
             "final": pd.concat([oof(right, "moe", "final"), oof(all_happy, "attention", "final")])},
        members=("moe/final",),
        final=pd.DataFrame({"clip_id": ["c6", "c7"], "name": ["c6", "c7"], "label": ["happy", "angry"],
                            "model_label": ["happy", "happy"], "confidence": .6, "rules": ["", EVIL]}),
        rule_changes=pd.DataFrame({"step": [0], "rule": [EVIL], "before": ["happy"], "after": ["angry"],
                                   "n": [1]}),
        label_flags=pd.DataFrame({"label": ["happy"], "alternative": ["sad"], "action": ["flagged"],
                                  "n": [1]}),
        truth="truth.csv",
        truth_accepted=pd.DataFrame({"round": [1], "label": ["happy"], "n": [3], "correct": [2]}),
        truth_final=pd.DataFrame({"clip_id": ["c6", "c7"], "name": ["c6", "c7"], "truth": ["happy", "sad"],
                                  "label": ["happy", "angry"]}))


@pytest.fixture
def data() -> ReportData:
    return make_data()


@pytest.fixture(scope="module")
def rendered() -> str:
    """The HTML of make_data(), rendered once (figures take most of the time)."""
    return build_report(make_data())


def test_acceptance_per_round_and_label(data):
    acc = acceptance(data.decisions, LABELS).set_index(["round", "label"])
    assert acc.loc[(1, "happy")].tolist() == [4, 3, 0.75]                 # proposed, accepted, rate
    assert acc.loc[(1, "sad")].tolist() == [4, 0, 0.0]
    assert acc.loc[(2, "angry")].tolist() == [2, 1, 0.5]
    assert np.isnan(acc.loc[(1, "angry"), "rate"])                         # nothing proposed: no rate


def test_class_balance_labelled_vs_accepted(data):
    bal = class_balance(data.human, data.accepted, LABELS).set_index("label")
    assert bal.loc["happy"].tolist() == [2, 0.5, 3, 0.75]
    assert bal.loc["sad"].tolist() == [1, 0.25, 0, 0.0]
    assert bal.loc["angry"].tolist() == [1, 0.25, 1, 0.25]


def test_weighted_f1_per_stage_and_head(data):
    f1 = head_f1(data.oof, data.human, LABELS).set_index(["stage", "head"])["weighted_f1"]
    # round 1: happy P=1 R=.5 F=2/3 (support 2), sad P=.5 R=1 F=2/3, angry F=1 -> (4/3+2/3+1)/4
    assert f1[("round-1", "moe/final")] == pytest.approx(0.75)
    assert f1[("final", "moe/final")] == pytest.approx(1.0)
    assert f1[("final", "attention/final")] == pytest.approx(1 / 3)        # all happy: 2 x (2/3) / 4


def test_scores_match_the_pipelines_metric():
    from models.metrics import evaluate

    rng = np.random.default_rng(0)
    truth, pred = rng.choice(LABELS, 60).tolist(), rng.choice(LABELS[:2], 60).tolist()  # never angry
    got, want = scores(truth, pred, LABELS), evaluate(truth, pred, LABELS)
    assert got["weighted_f1"] == pytest.approx(want["weighted_f1"]) and got["accuracy"] == pytest.approx(
        want["accuracy"])
    assert got["matrix"].tolist() == want["confusion"]["matrix"]


def test_teacher_agreement_per_round_and_label(data):
    per_round = teacher_agreement(data.votes, "round").set_index(["round", "voter"])
    assert per_round.loc[(1, "moe/final")].tolist() == [3, 2, pytest.approx(2 / 3)]
    assert per_round.loc[(1, "attention/final")].tolist() == [3, 1, pytest.approx(1 / 3)]
    assert per_round.loc[(2, "moe/final"), "rate"] == 1.0
    per_label = teacher_agreement(data.votes, "label").set_index(["label", "voter"])["rate"]
    assert per_label[("happy", "moe/final")] == 1.0 and per_label[("happy", "attention/final")] == 0.5
    assert per_label[("sad", "moe/final")] == 0.0


def test_html_is_self_contained_escaped_and_complete(rendered):
    text = rendered
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in text
    images = re.findall(r'<img alt="[^"]*" src="([^"]+)"', text)
    assert len(images) == 7          # acceptance, balance, F1, 2 confusion matrices, 2 teacher figures
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in text and "https://" not in text and "<script" not in text
    assert "tiny&lt;&amp;&gt;" in text and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;co" in text
    assert "<td>0.333</td>" in text and "<td>0.750</td>" in text             # F1 of the heads
    assert "<td>3/4 (0.750)</td>" in text and "<td>0/0 (–)</td>" in text     # accepted/proposed (rate)
    assert '<td class="t">moe/final</td><td>2/3 (0.667)</td><td>1/1 (1.000)</td>' in text   # teacher
    assert "4 clips, weighted F1 1.000" in text                             # validation: ensemble all right
    # test clips: c6 happy right, c7 sad called angry -> F1 (1 x 1 + 0 x 1) / 2
    assert "2 clips, weighted F1 0.500, accuracy 0.500" in text
    assert "no truth file" not in text


def test_missing_parts_are_stated_not_invented(data):
    data.finalize_run, data.final, data.members = None, None, ()
    data.oof.pop("final")
    data.votes = data.votes[data.votes["voter"] != "teacher"]
    data.truth, data.truth_accepted, data.truth_final = None, None, None
    text = build_report(data)
    assert "no teacher voted in this mining run" in text and "no finalize run yet" in text
    assert "round-1: baseline head moe/final" in text                       # validation falls back
    assert len(re.findall(r"<img ", text)) == 4


def test_markdown_digest_and_atomic_file(data, tmp_path):
    md = report_markdown(data, tmp_path / "r.html")
    assert "## Rounds" in md and "## Class balance" in md and "## Agreement with the teacher" in md
    assert "| happy | 2 | 0.500 | 3 | 0.750 |" in md
    path = write_report("<!DOCTYPE html><p>r</p>", tmp_path / "reports" / "r.html")
    assert path.read_text("utf-8") == "<!DOCTYPE html><p>r</p>"
    assert [p.name for p in path.parent.iterdir()] == ["r.html"]            # no temporary file left
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.slow
def test_build_report_file_from_a_workspace(tmp_path):
    from tests.storage.test_report_data import build_workspace

    ws = build_workspace(tmp_path / "ws")
    out = build_report_file(ws.root)
    assert out["path"] == str((ws.root / "reports" / "mine-b.html").resolve())
    assert (out["mine_run"], out["finalize_run"]) == ("mine-b", "finalize-b")
    text = (ws.root / "reports" / "mine-b.html").read_text("utf-8")
    assert "<h2>Teacher agreement</h2>" in text and "demote(label=happy,margin=0.1)" in text
    assert "## Weighted F1 on human labels (OOF)" in out["markdown"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_headless_chromium_opens_the_report(rendered, tmp_path):
    path = write_report(rendered, tmp_path / "report.html")
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          path.as_uri()], capture_output=True, text=True, timeout=120, check=True).stdout
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in dom
    assert dom.count('src="data:image/png;base64,') == 7
