"""Property-based tests of the voting rules (tasks.mine.decide) on random vote tables.

tests/tasks/test_mine.py checks hand-made tables and the share floors of `balance`/`select`;
these check the rules themselves over any table: what consensus and a quorum may accept,
that stricter settings never accept more, that `both` is consensus and vote on one label,
that row order changes nothing, and that every clip gets exactly one decision with a reason.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.mine import MiningPolicy, decide, select, vote_json

VOTERS = ["moe/final", "attention/final", "moe/fused", "teacher"]
LABELS = ["neutral", "happy", "sad"]
SETTINGS = settings(max_examples=25, deadline=None)

VOTE = st.one_of(st.none(), st.tuples(st.sampled_from(LABELS),
                                      st.floats(0.0, 1.0).map(lambda x: round(x, 2))))
TABLE = st.lists(st.fixed_dictionaries({v: VOTE for v in VOTERS}), min_size=1, max_size=8)
THRESHOLDS = st.one_of(st.none(), st.fixed_dictionaries({lab: st.sampled_from([0.3, 0.5, 0.8])
                                                         for lab in LABELS}))


def table(rows: list[dict]) -> pd.DataFrame:
    out = []
    for i, votes in enumerate(rows):
        row = {"clip_id": f"c{i:02d}"}
        for voter in VOTERS:
            label, conf = votes[voter] or (None, math.nan)
            row[f"{voter}:label"], row[f"{voter}:confidence"] = label, conf
        out.append(row)
    return pd.DataFrame(out)


def accepted(decisions: pd.DataFrame) -> set[str]:
    return set(decisions.loc[decisions["decision"] == "accepted", "clip_id"])


def texts(decisions: pd.DataFrame) -> pd.DataFrame:
    """The decisions with each reason as text (categorical codes depend on the rows' order)."""
    return decisions.assign(reason=decisions["reason"].astype("str"))


def counted(votes: dict, label: str, floor: float) -> int:
    return sum(1 for v in votes.values() if v is not None and v[0] == label and v[1] >= floor)


@SETTINGS
@given(rows=TABLE, policy=st.sampled_from(["consensus", "vote", "both"]), quorum=st.integers(1, 4),
       thresholds=THRESHOLDS)
def test_every_clip_gets_exactly_one_decision_with_a_reason_and_its_votes(rows, policy, quorum, thresholds):
    votes = table(rows)
    d = decide(votes, VOTERS, thresholds, MiningPolicy(policy, quorum=quorum))
    assert d["clip_id"].tolist() == votes["clip_id"].tolist()
    assert d["decision"].isin(["accepted", "rejected"]).all()
    assert d["reason"].notna().all() and (d["reason"].astype("str").str.len() > 0).all()
    for row, cast in zip(rows, vote_json(votes, VOTERS), strict=True):
        assert json.loads(cast) == {v: {"label": x[0], "confidence": x[1]} for v, x in row.items() if x}
    acc = d[d["decision"] == "accepted"]
    assert acc["label"].isin(LABELS).all() and acc["confidence"].notna().all()


@SETTINGS
@given(rows=TABLE, thresholds=THRESHOLDS, teacher_floor=st.sampled_from([0.0, 0.5, 0.9]))
def test_consensus_accepts_exactly_where_baseline_and_teacher_agree_above_their_bars(rows, thresholds,
                                                                                     teacher_floor):
    policy = MiningPolicy("consensus", teacher_floor=teacher_floor)
    d = decide(table(rows), VOTERS, thresholds, policy)
    for votes, (_, dec) in zip(rows, d.iterrows(), strict=True):
        base, teacher = votes["moe/final"], votes["teacher"]
        agree = base is not None and teacher is not None and base[0] == teacher[0]
        bars = agree and teacher[1] >= teacher_floor and (
            thresholds is None or base[1] >= thresholds[base[0]])
        assert (dec["decision"] == "accepted") == bars
        if bars:
            assert dec["label"] == base[0] and dec["confidence"] == base[1]


@SETTINGS
@given(rows=TABLE, quorum=st.integers(1, 4), floor=st.sampled_from([0.0, 0.4, 0.7]))
def test_a_quorum_vote_accepts_only_a_label_with_at_least_quorum_votes_and_no_tie(rows, quorum, floor):
    d = decide(table(rows), VOTERS, None, MiningPolicy("vote", quorum=quorum, voter_floor=floor))
    for votes, (_, dec) in zip(rows, d.iterrows(), strict=True):
        if dec["decision"] != "accepted":
            continue
        n = counted(votes, dec["label"], floor)
        assert n >= quorum
        assert all(counted(votes, other, floor) < n for other in LABELS if other != dec["label"])


@SETTINGS
@given(rows=TABLE, policy=st.sampled_from(["vote", "both"]), quorum=st.integers(1, 3),
       thresholds=THRESHOLDS)
def test_raising_the_quorum_never_adds_accepted_clips(rows, policy, quorum, thresholds):
    votes = table(rows)
    low = accepted(decide(votes, VOTERS, thresholds, MiningPolicy(policy, quorum=quorum)))
    high = accepted(decide(votes, VOTERS, thresholds, MiningPolicy(policy, quorum=quorum + 1)))
    assert high <= low


@SETTINGS
@given(rows=TABLE, floors=st.tuples(st.floats(0, 1), st.floats(0, 1)).map(sorted))
def test_raising_a_bar_of_consensus_never_adds_accepted_clips(rows, floors):
    votes = table(rows)
    lo, hi = floors
    assert accepted(decide(votes, VOTERS, None, MiningPolicy("consensus", teacher_floor=hi))) <= \
        accepted(decide(votes, VOTERS, None, MiningPolicy("consensus", teacher_floor=lo)))
    strict = dict.fromkeys(LABELS, hi)
    loose = dict.fromkeys(LABELS, lo)
    assert accepted(decide(votes, VOTERS, strict, MiningPolicy("consensus"))) <= \
        accepted(decide(votes, VOTERS, loose, MiningPolicy("consensus")))


@SETTINGS
@given(rows=TABLE, quorum=st.integers(1, 4), thresholds=THRESHOLDS)
def test_both_is_consensus_and_vote_on_the_same_label(rows, quorum, thresholds):
    votes = table(rows)
    by = {p: decide(votes, VOTERS, thresholds, MiningPolicy(p, quorum=quorum)).set_index("clip_id")
          for p in ("consensus", "vote", "both")}
    for clip in votes["clip_id"]:
        c, v, b = (by[p].loc[clip] for p in ("consensus", "vote", "both"))
        expected = (c["decision"] == "accepted" and v["decision"] == "accepted" and c["label"] == v["label"])
        assert (b["decision"] == "accepted") == expected
        if expected:
            assert b["label"] == c["label"]


@SETTINGS
@given(rows=TABLE, policy=st.sampled_from(["consensus", "vote", "both"]), quorum=st.integers(1, 4),
       thresholds=THRESHOLDS, seed=st.integers(0, 2**16))
def test_decisions_do_not_depend_on_the_order_of_the_pool_rows(rows, policy, quorum, thresholds, seed):
    votes = table(rows)
    shuffled = votes.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    mp = MiningPolicy(policy, quorum=quorum)
    a = decide(votes, VOTERS, thresholds, mp).set_index("clip_id").sort_index()
    b = decide(shuffled, VOTERS, thresholds, mp).set_index("clip_id").sort_index()
    pd.testing.assert_frame_equal(texts(a), texts(b))     # reasons' codes follow the rows' order


@SETTINGS
@given(rows=st.lists(st.tuples(st.sampled_from(LABELS), st.booleans()), min_size=1, max_size=20),
       target=st.sampled_from([0.5, 0.8, 0.95]), seed=st.integers(0, 2**16))
def test_selection_does_not_depend_on_row_order_even_with_tied_estimates(rows, target, seed):
    rng = np.random.default_rng(seed)
    # Few distinct values, so most clips tie with another (ties are broken by clip id).
    rho = rng.choice([0.4, 0.9, 0.9, 0.97, 0.999], size=len(rows))
    d = pd.DataFrame({"clip_id": [f"c{i:02d}" for i in range(len(rows))],
                      "decision": ["accepted" if ok else "rejected" for _, ok in rows],
                      "label": [lab for lab, _ in rows], "confidence": 0.5, "reason": "policy",
                      "votes": "{}"})
    share = {"neutral": 0.5, "happy": 0.3, "sad": 0.2}
    order = rng.permutation(len(rows))
    a = select(d, rho, target, share).set_index("clip_id").sort_index()
    b = select(d.iloc[order].reset_index(drop=True), rho[order], target, share)
    b = b.set_index("clip_id").sort_index()
    pd.testing.assert_frame_equal(texts(a), texts(b))
    # What the policy rejected stays rejected, with its reason untouched.
    assert (a.loc[d.loc[d["decision"] == "rejected", "clip_id"], "reason"] == "policy").all()
