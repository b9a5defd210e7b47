"""Pseudo-label policies on small hand-made vote tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.mine import MiningPolicy, balance, decide, label_thresholds, vote_json

VOTERS = ["moe/final", "attention/final", "moe/fused", "teacher"]
THRESH = {"happy": 0.8, "sad": 0.6, "neutral": 0.7}


def table(*rows):
    """rows: (clip_id, {voter: (label, confidence)})."""
    out = []
    for cid, votes in rows:
        row = {"clip_id": cid}
        for voter in VOTERS:
            label, conf = votes.get(voter, (None, float("nan")))
            row[f"{voter}:label"], row[f"{voter}:confidence"] = label, conf
        out.append(row)
    return pd.DataFrame(out)


LABELS5 = ["neutral", "angry", "happy", "sad", "worried"]
ALL_HAPPY = {v: ("happy", 0.9) for v in VOTERS}


def one(policy, votes, thresholds=THRESH):
    return decide(table(("c", votes)), VOTERS, thresholds, policy).iloc[0]


def test_consensus_accepts_agreement_above_the_labels_threshold():
    d = one(MiningPolicy("consensus"), ALL_HAPPY)
    assert d["decision"] == "accepted" and d["label"] == "happy" and d["confidence"] == 0.9
    assert d["reason"] == "consensus: moe/final and teacher say happy (0.90 >= 0.80)"
    assert json.loads(vote_json(table(("c", ALL_HAPPY)), VOTERS)[0])["teacher"] == {"label": "happy",
                                                                                 "confidence": 0.9}


def test_consensus_rejects_disagreement_low_confidence_and_no_teacher():
    d = one(MiningPolicy("consensus"), ALL_HAPPY | {"teacher": ("sad", 0.9)})
    assert d["decision"] == "rejected" and d["reason"] == "consensus: teacher says sad, moe/final says happy"
    d = one(MiningPolicy("consensus"), ALL_HAPPY | {"moe/final": ("happy", 0.75)})
    assert d["decision"] == "rejected" and "0.75 < threshold 0.80" in d["reason"]
    d = one(MiningPolicy("consensus"), {k: v for k, v in ALL_HAPPY.items() if k != "teacher"})
    assert d["decision"] == "rejected" and d["reason"] == "consensus: no teacher answer"
    d = one(MiningPolicy("consensus", teacher_floor=0.95), ALL_HAPPY)
    assert d["decision"] == "rejected" and "teacher confidence 0.90 < 0.95" in d["reason"]


def test_per_label_thresholds_differ():
    votes = {v: ("sad", 0.65) for v in VOTERS}
    assert one(MiningPolicy("consensus"), votes)["decision"] == "accepted"  # sad: 0.6
    votes = {v: ("happy", 0.65) for v in VOTERS}
    assert one(MiningPolicy("consensus"), votes)["decision"] == "rejected"  # happy: 0.8


def test_vote_quorum_floor_and_ties():
    three = ALL_HAPPY | {"moe/fused": ("sad", 0.9)}
    d = one(MiningPolicy("vote", quorum=3), three)
    assert d["decision"] == "accepted" and d["reason"] == "vote: 3 of 4 voters say happy"
    d = one(MiningPolicy("vote", quorum=4), three)
    assert d["decision"] == "rejected" and d["reason"] == "vote: 3 of 4 voters say happy, quorum 4"
    d = one(MiningPolicy("vote", quorum=3, voter_floor=0.95), three)
    assert d["decision"] == "rejected" and d["reason"] == "vote: no vote above the floor"
    tie = {
        "moe/final": ("happy", 0.9),
        "attention/final": ("happy", 0.9),
        "moe/fused": ("sad", 0.9),
        "teacher": ("sad", 0.9),
    }
    d = one(MiningPolicy("vote", quorum=2), tie)
    assert d["decision"] == "rejected" and d["reason"] == "vote: tie at 2 of 4 voters"


def test_both_needs_consensus_and_quorum_on_the_same_label():
    d = one(MiningPolicy("both", quorum=3), ALL_HAPPY)
    assert d["decision"] == "accepted"
    assert (
        d["reason"].startswith("consensus: moe/final and teacher say happy") and "vote: 4 of 4" in d["reason"]
    )
    weak = {
        "moe/final": ("happy", 0.9),
        "teacher": ("happy", 0.9),
        "attention/final": ("sad", 0.9),
        "moe/fused": ("neutral", 0.9),
    }
    d = one(MiningPolicy("both", quorum=3), weak)
    assert d["decision"] == "rejected" and "quorum 3" in d["reason"]


def test_balance_trims_the_majority_label_and_keeps_the_most_confident():
    decisions = pd.DataFrame(
        {
            "clip_id": [f"c{i}" for i in range(12)],
            "decision": ["accepted"] * 12,
            "label": ["neutral"] * 10 + ["sad"] * 2,
            "confidence": [0.99 - i * 0.01 for i in range(10)] + [0.9, 0.9],
            "reason": ["ok"] * 12,
            "votes": ["{}"] * 12,
        }
    )
    before = decisions.copy()
    out = balance(decisions, {"neutral": 0.5, "sad": 0.5}, min_ratio=0.5)
    pd.testing.assert_frame_equal(decisions, before)                        # the input is unchanged
    kept = out[out["decision"] == "accepted"]
    # sad must keep >= 0.5 x its 0.5 labelled share: 2 of at most 8 accepted.
    assert kept["label"].value_counts().to_dict() == {"neutral": 6, "sad": 2}
    assert kept.loc[kept["label"] == "neutral", "clip_id"].tolist() == ["c0", "c1", "c2", "c3", "c4", "c5"]
    trimmed = out[out["decision"] == "rejected"]
    assert len(trimmed) == 4 and trimmed["reason"].str.contains("balance: neutral is over-represented").all()


def test_balance_leaves_a_balanced_set_alone():
    decisions = pd.DataFrame(
        {
            "clip_id": ["a", "b", "c"],
            "decision": ["accepted", "accepted", "rejected"],
            "label": ["neutral", "sad", "sad"],
            "confidence": [0.9, 0.9, 0.1],
            "reason": ["x"] * 3,
            "votes": ["{}"] * 3,
        }
    )
    pd.testing.assert_frame_equal(balance(decisions, {"neutral": 0.5, "sad": 0.5}), decisions)


@settings(max_examples=80, deadline=None)
@given(
    labels=st.lists(
        st.sampled_from(["neutral", "angry", "happy", "sad", "worried"]), min_size=1, max_size=60
    ),
    ratio=st.sampled_from([0.25, 0.5, 0.75]),
)
def test_balance_guarantees_the_share_floor(labels, ratio):
    share = {"neutral": 0.3, "angry": 0.25, "happy": 0.2, "sad": 0.15, "worried": 0.1}
    decisions = pd.DataFrame(
        {
            "clip_id": [str(i) for i in range(len(labels))],
            "decision": "accepted",
            "label": labels,
            "confidence": [i / 100 for i in range(len(labels))],
            "reason": "r",
            "votes": "{}",
        }
    )
    out = balance(decisions, share, min_ratio=ratio)
    kept = out.loc[out["decision"] == "accepted", "label"]
    present = set(kept)
    assert present == set(labels) or kept.empty  # a label with accepted clips keeps some
    for lab in present:
        assert (kept == lab).mean() >= ratio * share[lab] - 1e-9 * len(kept) or (
            kept == lab
        ).sum() >= ratio * share[lab] * len(kept) - 1e-9


def test_thresholds_from_out_of_fold_predictions():
    oof = pd.DataFrame(
        {
            "truth": ["happy"] * 9 + ["sad"] + ["sad"] * 4,
            "label": ["happy"] * 10 + ["sad"] * 4,
            "confidence": [0.99, 0.98, 0.97, 0.96, 0.95, 0.9, 0.85, 0.8, 0.75, 0.92, 0.9, 0.8, 0.7, 0.6],
        }
    )
    t = label_thresholds(oof, ["happy", "sad", "worried"], target_precision=0.9, floor=0.5)
    # happy: sorted by confidence the wrong one is 6th (0.92); precision >= .9 holds down to 0.75 (9/10).
    assert t["happy"] == 0.75
    assert t["sad"] == 0.6 and t["worried"] == 0.99  # no prediction: the ceiling


def test_policy_is_validated():
    with pytest.raises(ValueError, match="unknown policy"):
        MiningPolicy("majority")


def test_vote_table_from_predictions_and_teacher_answers():
    from tasks.mine import oof_confidences, teacher_votes, vote_table, voter_probs

    labels = ("happy", "sad")
    preds = pd.DataFrame(
        {
            "clip_id": ["a", "b", "a", "b", "a"],
            "head": ["final", "final", "expert:x", "expert:x", "final"],
            "fusion": ["moe", "moe", "moe", "moe", "moe"],
            "seed": ["mean", "mean", "mean", "mean", "0"],
            "fold": ["mean", "mean", "mean", "mean", "0"],
            "p_happy": [0.8, 0.3, float("nan"), 0.6, 0.1],
            "p_sad": [0.2, 0.7, float("nan"), 0.4, 0.9],
        }
    )
    answers = pd.DataFrame(
        {
            "clip_id": ["a", "b"],
            "status": ["answered", "unparseable"],
            "label": ["happy", None],
            "scores": ['{"happy": 0.7, "sad": 0.3}', None],
        }
    )
    voters = ["moe/final", "moe/expert:x", "teacher"]
    probs = voter_probs(preds, voters, labels)
    assert set(probs) == {"moe/final", "moe/expert:x"}          # the teacher is no model
    table = vote_table(["a", "b", "c"], probs, teacher_votes(answers), voters, labels)
    a, b, c = (table.set_index("clip_id").loc[k] for k in "abc")
    assert a["moe/final:label"] == "happy" and a["moe/final:confidence"] == 0.8  # the 'mean' row only
    assert pd.isna(a["moe/expert:x:label"]) and b["moe/expert:x:label"] == "happy"
    assert a["teacher:label"] == "happy" and a["teacher:confidence"] == 0.7
    assert pd.isna(b["teacher:label"]) and pd.isna(c["moe/final:label"])  # unparseable: no vote
    with pytest.raises(ValueError, match="voter 'attention/final' is not among"):
        vote_table(["a"], voter_probs(preds, ["attention/final"], labels), teacher_votes(answers),
                   ["attention/final"], labels)
    with pytest.raises(ValueError, match="clip 'a' is in the pool twice"):
        vote_table(["a", "b", "a"], probs, None, ["moe/final"], labels)
    # No teacher: its votes are absent for every clip.
    assert vote_table(["a", "b"], {}, None, ["teacher"], labels)["teacher:label"].isna().all()
    # Labels are codes, not a string per clip; a teacher's label outside the set still votes.
    assert isinstance(table["moe/final:label"].dtype, pd.CategoricalDtype)
    odd = teacher_votes(answers.assign(label=["bored", None]))
    assert vote_table(["a", "b"], probs, odd, voters, labels)["teacher:label"].tolist()[0] == "bored"
    oof = pd.DataFrame(
        {
            "clip_id": ["a", "a", "b"],
            "fusion": "moe",
            "head": "final",
            "seed": [0, 1, 0],
            "p_happy": [0.9, 0.7, 0.4],
            "p_sad": [0.1, 0.3, 0.6],
        }
    )
    conf = oof_confidences(
        oof, pd.DataFrame({"clip_id": ["a", "b"], "label": ["happy", "happy"]}), "moe/final", labels
    )
    assert conf.to_dict("list") == {
        "truth": ["happy", "happy"],
        "label": ["happy", "sad"],
        "confidence": [pytest.approx(0.8), pytest.approx(0.6)],
    }


def test_round_bookkeeping_discard_merge_and_stop():
    from tasks.mine import RoundResult, accepted_labels, discard_round, merge_accepted, stop_reason

    decisions = pd.DataFrame(
        {
            "clip_id": ["a", "b", "c"],
            "decision": ["accepted", "rejected", "accepted"],
            "label": ["happy", "sad", "sad"],
            "confidence": [0.9, 0.4, 0.7],
            "reason": ["r1", "r2", "r3"],
            "votes": ["{}"] * 3,
        }
    )
    hard, soft = accepted_labels(decisions), accepted_labels(decisions, "confidence")
    assert hard.to_dict("list") == {"clip_id": ["a", "c"], "label": ["happy", "sad"], "weight": [1.0, 1.0]}
    assert soft["weight"].tolist() == [0.9, 0.7]
    merged = merge_accepted(
        hard, pd.DataFrame({"clip_id": ["c", "d"], "label": ["happy", "sad"], "weight": [1.0, 1.0]})
    )
    assert merged["clip_id"].tolist() == ["a", "c", "d"] and merged.iloc[1]["label"] == "sad"  # first wins
    before = decisions.copy()
    dropped = discard_round(decisions, "F1 fell")
    pd.testing.assert_frame_equal(decisions, before)                         # the input is unchanged
    assert (dropped["decision"] == "rejected").all()
    assert dropped["reason"].tolist() == [
        "r1; round discarded: F1 fell",
        "r2",
        "r3; round discarded: F1 fell",
    ]
    some = RoundResult(decisions, {}, 0.70, {"happy": 1})
    none = RoundResult(decisions, {}, 0.80, {})
    assert stop_reason(some, None) is None and stop_reason(some, 0.69) is None
    assert stop_reason(some, 0.75).startswith("CV weighted F1 on human labels fell to 0.700 from 0.750")
    assert stop_reason(some, 0.75, max_drop=0.1) is None
    assert stop_reason(none, 0.70) == "no clip accepted"


def test_the_pool_is_one_sorted_string_array_and_rounds_take_their_clips_out_of_it():
    from tasks.mine import remaining_pool, resume_rounds, usable_pool

    registry = pd.DataFrame({
        "clip_id": ["c3", "c1", "t1", "c2", "c4"],
        "split": ["candidate", "candidate", "train", "candidate", "candidate"],
        "status": ["ok", "ok", "ok", "ok", "unreadable"],
    })
    pool = usable_pool(registry)
    assert pool.dtype == "str" and list(pool) == ["c1", "c2", "c3"]     # no train, no unusable clip
    assert list(remaining_pool(pool, pd.Series(["c2", "zz"]))) == ["c1", "c3"]   # order kept
    assert list(remaining_pool(pool, [])) == ["c1", "c2", "c3"]
    fresh = resume_rounds([], pd.DataFrame(), pool, "hard")
    assert fresh[0] is None and list(fresh[1]) == ["c1", "c2", "c3"] and fresh[2] is None
    done = [{"cv_weighted_f1": 0.6, "stopped": False}, {"cv_weighted_f1": 0.7, "stopped": False}]
    accepted = pd.DataFrame({"clip_id": ["c3"], "label": ["sad"], "confidence": [0.9], "round": [1]})
    labels, rest, best = resume_rounds(done, accepted, pool, "hard")
    assert labels["clip_id"].tolist() == ["c3"] and list(rest) == ["c1", "c2"] and best == 0.7


def test_consensus_without_thresholds_needs_agreement_only():
    votes = table(("a", ALL_HAPPY | {"moe/final": ("happy", 0.3)}),
                  ("b", ALL_HAPPY | {"teacher": ("sad", 0.9)}))
    d = decide(votes, VOTERS, None, MiningPolicy("consensus"))
    assert d["decision"].tolist() == ["accepted", "rejected"]
    assert d["reason"].iloc[0] == "consensus: moe/final and teacher say happy"


def _allowed(labels, rho):
    frame = pd.DataFrame({"clip_id": [f"c{i}" for i in range(len(labels))], "decision": "accepted",
                          "label": labels, "confidence": 0.5, "reason": "consensus", "votes": "{}"})
    return frame, np.array(rho)


def test_select_accepts_the_largest_set_reaching_the_target():
    from tasks.mine import select

    d, rho = _allowed(["happy"] * 5, [0.99, 0.98, 0.96, 0.90, 0.60])
    before = d.copy()
    out = select(d, rho, 0.95, {"happy": 1.0})
    pd.testing.assert_frame_equal(d, before)                                # the input is unchanged
    assert out["decision"].tolist() == ["accepted"] * 4 + ["rejected"]     # mean of 4: 0.9575
    assert out["confidence"].tolist() == rho.tolist()                       # the estimate replaces it
    assert "estimated precision 0.990 (accepted set 0.957 >= 0.95)" in out["reason"].iloc[0]
    assert "precision: estimated 0.600" in out["reason"].iloc[4]
    assert (select(d, rho, 0.999, {"happy": 1.0})["decision"] == "rejected").all()


def test_select_keeps_rare_labels_above_their_floor_across_rounds():
    from tasks.mine import select

    d, rho = _allowed(["neutral"] * 8 + ["worried"], [0.99] * 8 + [0.97])
    share = {"neutral": 0.8, "worried": 0.2}
    out = select(d, rho, 0.95, share, min_ratio=0.5)
    kept = out[out["decision"] == "accepted"]
    # worried (one clip) must be >= 10% of the accepted set: at most 10 clips, all 9 fit.
    assert len(kept) == 9
    # With 20 neutral clips accepted earlier and none worried, the one worried clip allows at
    # most 10 accepted in all: no new clip fits.
    out = select(d, rho, 0.95, share, min_ratio=0.5, already={"neutral": 20})
    assert (out["decision"] == "rejected").all()
    assert out["reason"].str.contains("balance: more accepted clips would leave worried below 0.5 x").all()
    # Earlier worried acceptances make room.
    out = select(d, rho, 0.95, share, min_ratio=0.5, already={"neutral": 20, "worried": 5})
    assert (out["decision"] == "accepted").sum() == 9


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["neutral", "angry", "worried"]), st.floats(0.5, 1.0)),
                min_size=1, max_size=40),
       st.sampled_from([0.8, 0.9, 0.95]))
def test_select_meets_the_target_and_the_floors(rows, target):
    from tasks.mine import select

    labels, rho = zip(*rows, strict=True)
    d, rho = _allowed(list(labels), list(rho))
    share = {"neutral": 0.5, "angry": 0.3, "worried": 0.2}
    out = select(d, rho, target, share, min_ratio=0.5)
    kept = out["decision"].to_numpy() == "accepted"
    if kept.any():
        assert rho[kept].mean() >= target - 1e-12
        counts = out.loc[kept, "label"].value_counts()
        for lab in set(labels):                       # every label that had a candidate
            assert counts.get(lab, 0) >= np.floor(0.5 * share[lab] * kept.sum() + 1e-9)


def test_decisions_made_a_chunk_at_a_time_are_those_made_at_once(monkeypatch):
    import tasks.mine

    rows = [(f"c{i:02d}", ALL_HAPPY if i % 3 else {"teacher": ("sad", 0.9)}) for i in range(7)]
    rows.append(("c07", {}))                                     # nobody voted: no label
    whole = decide(table(*rows), VOTERS, THRESH, MiningPolicy("consensus"))
    monkeypatch.setattr(tasks.mine, "DECIDE_CHUNK", 3)           # chunks of 3, 3 and 2 rows
    chunked = decide(table(*rows), VOTERS, THRESH, MiningPolicy("consensus"))
    pd.testing.assert_frame_equal(chunked, whole)
    assert chunked["decision"].tolist() == ["rejected", "accepted", "accepted"] * 2 + ["rejected"] * 2
    assert chunked["confidence"].dtype == "float64" and pd.isna(chunked["label"].iloc[7])
    empty = decide(table(*rows).iloc[:0], VOTERS, THRESH, MiningPolicy("consensus"))
    assert list(empty.columns) == list(whole.columns) and len(empty) == 0
    # Reasons are codes into the distinct reasons; every other column has one type in every chunk.
    assert isinstance(empty["reason"].dtype, pd.CategoricalDtype)
    assert empty.dtypes.drop("reason").to_dict() == whole.dtypes.drop("reason").to_dict()
    assert whole["reason"].cat.categories.tolist() == [      # 8 clips, 2 distinct reasons
        "consensus: no moe/final vote", "consensus: moe/final and teacher say happy (0.90 >= 0.80)"]


def test_a_rounds_records_are_its_decisions_with_their_votes_a_chunk_at_a_time():
    from tasks.mine import RoundResult

    rows = [(f"c{i}", ALL_HAPPY if i % 2 else {"teacher": ("sad", 0.8), "moe/fused": ("sad", 0.6)})
            for i in range(8)]
    votes = table(*rows)
    decisions = decide(votes, VOTERS, THRESH, MiningPolicy("consensus")).assign(new_clip=True)
    result = RoundResult(decisions, THRESH, 0.7, {"happy": 4}, {}, votes, tuple(VOTERS))
    frames = list(result.records(chunk=3))
    assert [len(f) for f in frames] == [3, 3, 2]
    records = pd.concat(frames, ignore_index=True)
    assert records["clip_id"].tolist() == decisions["clip_id"].tolist()
    assert records["reason"].tolist() == decisions["reason"].astype(str).tolist()
    assert records["reason"].dtype == "str" and records["new_clip"].all()
    assert [json.loads(v) for v in records["votes"]] == [
        {v: {"label": lab, "confidence": c} for v, (lab, c) in votes_of.items()} for _, votes_of in rows]
    # Decisions and votes must be the same clips, row for row; without the votes nothing is written.
    backwards = votes.iloc[::-1].reset_index(drop=True)
    shuffled = RoundResult(decisions, THRESH, 0.7, {}, {}, backwards, tuple(VOTERS))
    with pytest.raises(ValueError, match="not row for row from clip 'c0'"):
        next(shuffled.records())
    with pytest.raises(ValueError, match="vote table is not here"):
        next(RoundResult(decisions, THRESH, 0.7, {}).records())


def test_a_decision_holds_a_few_bytes_per_clip_not_its_reason_and_votes_as_text():
    rng = np.random.default_rng(0)
    labels = ["happy", "sad", "neutral"]
    rows = [(f"clip-{i:06d}", {v: (labels[rng.integers(3)], float(rng.uniform(0.3, 1.0))) for v in VOTERS})
            for i in range(3000)]
    votes = table(*rows)
    decisions = decide(votes, VOTERS, None, MiningPolicy("both", quorum=3))     # the default selection's
    assert isinstance(decisions["reason"].dtype, pd.CategoricalDtype)
    assert decisions["reason"].nunique() < 100                   # 3,000 clips, a few words (48)
    per_clip = decisions.drop(columns="clip_id").memory_usage(deep=True, index=False).sum() / len(decisions)
    as_json = vote_json(votes, VOTERS)
    text = decisions["reason"].astype(str).str.len().mean() + np.mean([len(v) for v in as_json])
    # decision, label, confidence and a reason code: ~45 bytes; the reason and votes as text were ~text.
    assert per_clip < 64 and text > 250, (per_clip, text)


def test_reasons_are_added_to_some_rows_as_codes():
    from tasks.mine import append_reason, set_reasons

    reason = pd.Series(pd.Categorical(["a", "b", "a", "c"]), index=[10, 11, 12, 13], name="reason")
    out = append_reason(reason, np.array([0, 3]), "; x")
    assert out.tolist() == ["a; x", "b", "a", "c; x"] and out.index.tolist() == [10, 11, 12, 13]
    assert sorted(out.cat.categories) == ["a", "a; x", "b", "c; x"]       # "c" no longer used
    out = append_reason(reason.astype(str), np.array([1, 2]), ["; 1", "; 2"])  # text in, one tail a row
    assert out.tolist() == ["a", "b; 1", "a; 2", "c"] and isinstance(out.dtype, pd.CategoricalDtype)
    assert set_reasons(reason, np.array([], int), []).tolist() == reason.tolist()


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.dictionaries(st.sampled_from(VOTERS), st.tuples(
    st.sampled_from(["happy", "sad", "naïve \"quoted\"", "日本"]),
    st.one_of(st.floats(0, 1), st.just(float("nan")), st.just(1e-17)))), min_size=1, max_size=12))
def test_vote_json_is_the_text_json_dumps_writes(rows):
    """The votes' JSON, built a voter at a time from label codes, is byte for byte what
    json.dumps(sort_keys=True) of each row's votes writes (NaN, unicode and quotes included)."""
    votes = table(*[(f"c{i}", r) for i, r in enumerate(rows)])
    expected = [json.dumps({v: {"label": lab, "confidence": c} for v, (lab, c) in r.items()}, sort_keys=True)
                for r in rows]
    assert list(vote_json(votes, VOTERS)) == expected
    # The vote table's categorical labels give the same text.
    coded = votes.astype({f"{v}:label": "category" for v in VOTERS})
    assert list(vote_json(coded, VOTERS)) == expected
