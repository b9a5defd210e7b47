"""Stage: pseudo-label mining, one round. Votes on unlabelled clips -> decisions.

Input: a vote table (one row per pool clip; per voter a label and a confidence: the fusion
heads and experts of the baseline, and the teacher), the per-label thresholds, and the label
distribution of the human-labelled set.
Output: one decision per clip: accepted or rejected, the label, a confidence, and the reason
in words, with every voter's vote (recorded per clip and round in `clip_decisions`).

Policies (configuration):
- `consensus` (MER2025 second place): the fused baseline's label equals the teacher's and the
  baseline's confidence clears that label's threshold;
- `vote` (MER2024 second place): at least `quorum` voters agree on a label, each above its
  confidence floor;
- `both`: consensus and vote.
How many of the clips the policy allows are accepted (`selection`):
- `estimated` (default): each allowed clip gets an estimated probability that its label is
  right: the baseline's probabilities, temperature-calibrated on out-of-fold predictions of
  the human-labelled clips, combined with the teacher's answer through the teacher's confusion
  matrix, which is estimated on the pool itself by EM (Dawid and Skene 1979, with the baseline
  as the prior of each clip). The largest set whose mean estimated probability reaches
  `target_precision` is accepted (most probable first), subject to the share floors below;
- `threshold`: per-label confidence thresholds at which the baseline's out-of-fold predictions
  reach `target_precision` alone (`label_thresholds`), then `balance`.
Either way no label may end below `min_share_ratio` of its share of the labelled set in the
accepted set (the most probable clips of over-represented labels are kept, the rest rejected
with reason `balance`). Everything is estimated from the labelled clips' out-of-fold
predictions and the unlabelled pool, never from hidden truth.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from models.calibration import calibrate, fit_temperature, teacher_posterior
from storage.ids import IdIndex, isin, positions
from storage.ingest import USABLE
from tasks.memory import trim_heap

if TYPE_CHECKING:                       # tasks.train loads torch; mining reads its results only
    from tasks.train import PoolPredictions

POLICIES = ("consensus", "vote", "both")
DECIDE_CHUNK = 10_000                    # vote rows turned into decisions at a time
# The decision columns' types, the same in every chunk (a chunk with no label is not `object`);
# the reason is categorical (`decide`).
DECISION_TYPES = {"clip_id": "str", "decision": "str", "label": "str", "confidence": "float64"}
SELECTIONS = ("estimated", "threshold")


@dataclass(frozen=True)
class MiningPolicy:
    policy: str = "both"
    baseline: str = "moe/final"          # the voter whose label the teacher must confirm
    teacher: str = "teacher"
    quorum: int = 3                      # voters that must agree (vote / both)
    voter_floor: float = 0.0             # a vote counts only at this confidence or more
    teacher_floor: float = 0.0           # the teacher's confidence must reach this (consensus)
    min_share_ratio: float = 0.5         # balance: no label below this x its labelled share
    selection: str = "estimated"         # estimated precision of the set, or per-label thresholds

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r}; choose one of {', '.join(POLICIES)}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"unknown selection {self.selection!r}; choose one of {', '.join(SELECTIONS)}")
        if self.quorum < 1:
            raise ValueError("quorum must be at least 1")


def label_thresholds(oof: pd.DataFrame, labels: Sequence[str], target_precision: float = 0.95,
                     floor: float = 0.5, ceiling: float = 0.99) -> dict[str, float]:
    """Per label, the lowest confidence at which out-of-fold predictions of that label reach
    `target_precision` (clipped to [floor, ceiling]; `ceiling` when no confidence does).

    `oof`: columns truth, label (predicted), confidence; one row per labelled clip.
    """
    out = {}
    for lab in labels:
        rows = oof[oof["label"] == lab].sort_values("confidence", ascending=False)
        correct = (rows["truth"] == lab).to_numpy()
        conf = rows["confidence"].to_numpy()
        best = ceiling
        if len(rows):
            precision = np.cumsum(correct) / np.arange(1, len(rows) + 1)
            ok = np.flatnonzero(precision >= target_precision)
            if len(ok):
                best = float(conf[ok.max()])
        out[lab] = float(min(max(best, floor), ceiling))
    return out


def _votes(row: dict, voters: Sequence[str]) -> dict[str, dict]:
    return {v: {"label": row[f"{v}:label"], "confidence": float(row[f"{v}:confidence"])}
            for v in voters if isinstance(row.get(f"{v}:label"), str)}


def decide(votes: pd.DataFrame, voters: Sequence[str], thresholds: dict[str, float] | None,
           policy: MiningPolicy) -> pd.DataFrame:
    """A decision per clip of the vote table (columns clip_id, <voter>:label, <voter>:confidence),
    row for row: clip_id, decision, label, confidence, reason (categorical: the same few words
    for most clips). The votes are not copied into it: `vote_json` writes a row's votes as JSON
    when the round is recorded (`RoundResult.records`). `thresholds` None: consensus needs agreement
    only (the selection step decides how many)."""
    columns = ("clip_id", "decision", "label", "confidence")
    # Plain dicts, not iterrows: building a Series per row took 21.6 s against 5.3 s on 100,000
    # clips. A chunk of rows at a time, each made a frame at once: the dicts of every row held
    # ~130 MB at 100,000. A reason is a code into the distinct reasons (a string per clip was
    # ~10 MB at 100,000, and each step that added to it built the column again).
    chunks, reasons, codes = [], {}, np.full(len(votes), -1, np.int32)
    for start in range(0, len(votes), DECIDE_CHUNK):
        out: dict[str, list] = {k: [] for k in columns}
        for i, row in enumerate(votes.iloc[start:start + DECIDE_CHUNK].to_dict("records"), start):
            one = _decide_one(_votes(row, voters), thresholds, policy)
            out["clip_id"].append(row["clip_id"])
            for k in ("decision", "label", "confidence"):
                out[k].append(one[k])
            codes[i] = reasons.setdefault(one["reason"], len(reasons))
        chunks.append(pd.DataFrame(out).astype(DECISION_TYPES))
    if not chunks:
        frame = pd.DataFrame({k: [] for k in columns}).astype(DECISION_TYPES)
    else:
        frame = chunks[0] if len(chunks) == 1 else pd.concat(chunks, ignore_index=True)
    frame["reason"] = pd.Categorical.from_codes(codes, categories=pd.Index(list(reasons), dtype="str"))
    return frame


def vote_json(votes: pd.DataFrame, voters: Sequence[str]) -> pd.api.extensions.ExtensionArray:
    """Each row's votes (of the voters that voted) as the JSON `clip_decisions.votes` holds,
    the text `json.dumps(..., sort_keys=True)` writes: {voter: {"confidence": c, "label": l}},
    as one Arrow string array. Each row's text is made from per-voter pieces and goes straight
    into the array, not into a list of every row's string (a dict per row and json.dumps took
    ~1.3 s at 100,000 clips, done for every round)."""
    pieces = []
    for voter in sorted(dict.fromkeys(voters)):
        said = votes[f"{voter}:label"]
        said = said.array if isinstance(said.dtype, pd.CategoricalDtype) else pd.Categorical(said)
        head = json.dumps(voter) + ': {"confidence": '
        tails = [', "label": ' + json.dumps(lab) + "}" if isinstance(lab, str) else None
                 for lab in said.categories]
        codes = np.asarray(said.codes).tolist()
        confidence = votes[f"{voter}:confidence"].to_numpy(np.float64).tolist()
        pieces.append((head, tails, codes, confidence))

    def rows() -> Iterator[str]:
        for i in range(len(votes)):
            cast = []
            for head, tails, codes, confidence in pieces:
                code = codes[i]
                if code >= 0 and tails[code] is not None:
                    cast.append(head + _number(confidence[i]) + tails[code])
            yield "{" + ", ".join(cast) + "}"

    return pd.array(pa.array(rows(), type=pa.large_string(), size=len(votes)), dtype="str")


def _number(x: float) -> str:
    """A float as json.dumps writes it."""
    return repr(x) if math.isfinite(x) else json.dumps(x)


def set_reasons(reason: pd.Series, rows: np.ndarray, texts: Sequence[str]) -> pd.Series:
    """`reason` (categorical, or strings) with the rows at positions `rows` set to `texts`:
    codes into the distinct reasons, never a string per clip."""
    cat = reason.array if isinstance(reason.dtype, pd.CategoricalDtype) else pd.Categorical(reason)
    new = pd.Categorical(pd.array(list(texts), dtype="str"))
    categories = cat.categories.append(new.categories).unique()
    old = np.asarray(cat.codes)
    codes = np.where(old >= 0, categories.get_indexer(cat.categories)[old], -1).astype(np.int32)
    codes[np.asarray(rows, dtype=np.int64)] = categories.get_indexer(new.categories)[np.asarray(new.codes)]
    out = pd.Categorical.from_codes(codes, categories=categories).remove_unused_categories()
    return pd.Series(out, index=reason.index, name=reason.name)


def append_reason(reason: pd.Series, rows: np.ndarray, suffix: str | Sequence[str]) -> pd.Series:
    """`reason` with `suffix` (one for all, or one per row) added to the rows at positions `rows`."""
    rows = np.asarray(rows, dtype=np.int64)
    before = np.asarray(reason.iloc[rows].astype("str"), dtype=object)
    tails = [suffix] * len(rows) if isinstance(suffix, str) else list(suffix)
    return set_reasons(reason, rows, [b + t for b, t in zip(before, tails, strict=True)])


def _decide_one(cast: dict[str, dict], thresholds: dict[str, float], policy: MiningPolicy) -> dict:
    base, teacher = cast.get(policy.baseline), cast.get(policy.teacher)
    reasons, label, confidence = [], None, None
    consensus_ok = vote_ok = True
    if policy.policy in ("consensus", "both"):
        consensus_ok, why = _consensus(base, teacher, thresholds, policy)
        reasons.append(why)
        if base is not None:
            label, confidence = base["label"], base["confidence"]
    if policy.policy in ("vote", "both"):
        vote_ok, why, top = _vote(cast, policy)
        reasons.append(why)
        if label is None and top is not None:
            label = top
            confidence = float(np.mean([v["confidence"] for v in cast.values() if v["label"] == top]))
        if policy.policy == "both" and base is not None and top is not None and top != base["label"]:
            vote_ok = False
    accepted = consensus_ok and vote_ok and label is not None
    return {"decision": "accepted" if accepted else "rejected", "label": label,
            "confidence": confidence, "reason": "; ".join(reasons)}


def _consensus(base, teacher, thresholds, policy) -> tuple[bool, str]:
    if base is None:
        return False, f"consensus: no {policy.baseline} vote"
    if teacher is None:
        return False, "consensus: no teacher answer"
    if teacher["label"] != base["label"]:
        return False, f"consensus: teacher says {teacher['label']}, {policy.baseline} says {base['label']}"
    if thresholds is None:
        if teacher["confidence"] < policy.teacher_floor:
            return False, (f"consensus: teacher confidence {teacher['confidence']:.2f} < "
                           f"{policy.teacher_floor:.2f}")
        return True, f"consensus: {policy.baseline} and teacher say {base['label']}"
    need = thresholds.get(base["label"], 1.0)
    if base["confidence"] < need:
        return False, (f"consensus: {base['label']} agreed but {policy.baseline} confidence "
                       f"{base['confidence']:.2f} < threshold {need:.2f}")
    if teacher["confidence"] < policy.teacher_floor:
        return False, (f"consensus: teacher confidence {teacher['confidence']:.2f} < "
                       f"{policy.teacher_floor:.2f}")
    return True, (f"consensus: {policy.baseline} and teacher say {base['label']} "
                  f"({base['confidence']:.2f} >= {need:.2f})")


def _vote(cast, policy) -> tuple[bool, str, str | None]:
    counted = [v["label"] for v in cast.values() if v["confidence"] >= policy.voter_floor]
    if not counted:
        return False, "vote: no vote above the floor", None
    labels, counts = np.unique(counted, return_counts=True)
    top = str(labels[counts.argmax()])
    agree = int(counts.max())
    tied = (counts == agree).sum() > 1
    if tied:
        return False, f"vote: tie at {agree} of {len(cast)} voters", None
    if agree < policy.quorum:
        return False, f"vote: {agree} of {len(cast)} voters say {top}, quorum {policy.quorum}", top
    return True, f"vote: {agree} of {len(cast)} voters say {top}", top


def balance(decisions: pd.DataFrame, labelled_share: dict[str, float],
            min_ratio: float = 0.5) -> pd.DataFrame:
    """Reject the least confident accepted clips of over-represented labels until no accepted
    label's share of the accepted set is below `min_ratio` times its share of the labelled set."""
    out = decisions.copy(deep=False)     # copy-on-write: only the columns set below are new
    accepted = out[out["decision"] == "accepted"]
    counts = accepted["label"].value_counts().to_dict()
    # Among the labels that have accepted clips: a label with none cannot be helped by
    # rejecting others (its threshold decides that), and the round reports it.
    shares = {lab: s for lab, s in labelled_share.items() if s > 0 and counts.get(lab, 0) > 0}
    if not len(accepted) or not shares:
        return out

    def caps(scale: float) -> dict[str, int]:
        return {lab: min(counts.get(lab, 0), int(np.floor(scale * shares.get(lab, 0.0))))
                if lab in shares else counts.get(lab, 0) for lab in set(counts) | set(shares)}

    def feasible(c: dict[str, int]) -> bool:
        total = sum(c.values())
        return total == 0 or all(c.get(lab, 0) >= min_ratio * s * total for lab, s in shares.items())

    lo, hi = 0.0, float(len(accepted)) / min(shares.values()) + 1
    if feasible(caps(hi)):
        return out
    for _ in range(60):                                       # largest feasible scale
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if feasible(caps(mid)) else (lo, mid)
    keep = caps(lo)
    for lab, group in accepted.groupby("label"):
        # Ties go by clip id, so the decision does not depend on the pool's row order.
        drop = group.sort_values(["confidence", "clip_id"], ascending=[False, True]).index[keep.get(lab, 0):]
        out.loc[drop, "decision"] = "rejected"
        out["reason"] = append_reason(out["reason"], out.index.get_indexer(drop),
                                      f"; balance: {lab} is over-represented among accepted clips "
                                      f"(kept the {keep.get(lab, 0)} most confident)")
    return out


def estimated_precision(decisions: pd.DataFrame, probs: np.ndarray, teacher: np.ndarray | None,
                        labels: Sequence[str], temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Per decision, the estimated probability that its label is right (NaN without a label),
    and the teacher's estimated confusion matrix. `probs`: the baseline head's probabilities,
    row for row with `decisions` (a NaN row: no prediction); `teacher`: the index in `labels`
    of the teacher's label, row for row (-1: none, or a label outside the set)."""
    labels = list(labels)
    p_cal = calibrate(np.asarray(probs, dtype=np.float64), temperature)
    p_cal[np.isnan(p_cal).any(axis=1)] = 1.0 / len(labels)
    t = np.full(len(decisions), -1) if teacher is None else np.asarray(teacher, dtype=np.int64)
    q, confusion = teacher_posterior(p_cal, t)
    del p_cal
    said = np.asarray(pd.Categorical(decisions["label"], categories=labels).codes, dtype=np.int64)
    rho = np.full(len(decisions), np.nan)
    known = np.flatnonzero(said >= 0)
    rho[known] = q[known, said[known]]
    return rho, confusion


def label_codes(votes: pd.DataFrame, voter: str, labels: Sequence[str]) -> np.ndarray:
    """A voter's label per row of the vote table as an index in `labels` (-1: no vote, or a
    label outside the set)."""
    said = votes[f"{voter}:label"].array
    at = pd.Index(list(labels)).get_indexer(said.categories)
    codes = np.asarray(said.codes, dtype=np.int64)
    return np.where(codes >= 0, at[codes], -1)


def pool_rows(pool_ids: Sequence[str], frame: pd.DataFrame) -> np.ndarray:
    """`frame`'s values (index clip_id) placed row for row with `pool_ids` (unique: the vote
    table's, which `vote_table` checked): NaN for a clip it lacks."""
    out = np.full((len(pool_ids), frame.shape[1]), np.nan, dtype=np.float64)
    at = positions(frame.index.array, pool_ids)
    inside = at >= 0
    out[at[inside]] = frame.to_numpy(np.float64)[inside]
    return out


def select(decisions: pd.DataFrame, rho: np.ndarray, target: float, labelled_share: dict[str, float],
           min_ratio: float = 0.5, already: dict[str, int] | None = None) -> pd.DataFrame:
    """Among the clips the policy allowed, accept the largest set whose mean estimated precision
    (`rho`) reaches `target`, most probable first, such that with the clips accepted in earlier
    rounds (`already`, per label) no label with any accepted clip falls below `min_ratio` x its
    labelled share. The others are rejected, saying which limit stopped them."""
    out = decisions.copy(deep=False)     # copy-on-write: only the columns set below are new
    out["confidence"] = np.where(np.isnan(rho), out["confidence"].astype(float), rho)
    already = already or {}
    allowed = np.flatnonzero((out["decision"] == "accepted").to_numpy() & ~np.isnan(rho))
    # Each allowed clip's rank by clip id (ties of `rho` go by it), and its label: the allowed
    # clips' strings only, not a Python string per clip of the pool.
    id_rank = np.zeros(len(out), np.int64)
    id_rank[allowed] = np.argsort(np.asarray(out["clip_id"].array.take(allowed).argsort()))
    allowed_labels = np.asarray(out["label"].array.take(allowed), dtype=object)

    def best_first(idx: np.ndarray) -> np.ndarray:
        # Most probable first; ties by clip id, so the pool's row order changes nothing.
        return idx[np.lexsort((id_rank[idx], -rho[idx]))]

    by_label: dict[str, np.ndarray] = {}
    for lab in pd.unique(allowed_labels):
        by_label[lab] = best_first(allowed[allowed_labels == lab])
    floors = {lab: s for lab, s in labelled_share.items()
              if s > 0 and (lab in by_label or already.get(lab, 0) > 0)}
    total_before = sum(already.values())

    def needs(n: int) -> dict[str, int]:
        # Rounded down to whole clips: a floor below one clip asks for none.
        return {lab: max(0, int(np.floor(min_ratio * s * (total_before + n) + 1e-9)) - already.get(lab, 0))
                for lab, s in floors.items()}

    def short_labels(n: int) -> list[str]:
        """The labels whose floor n new clips cannot meet (all of them if the floors exceed n)."""
        need = needs(n)
        short = sorted(lab for lab in need if need[lab] > len(by_label.get(lab, ())))
        return short or (sorted(lab for lab in need if need[lab]) if sum(need.values()) > n else [])

    def pick(n: int) -> np.ndarray | None:
        """The best n clips meeting the floors, or None if the floors cannot be met."""
        if short_labels(n):
            return None
        need = needs(n)
        forced = [by_label[lab][:m] for lab, m in need.items() if m]
        chosen = np.concatenate(forced) if forced else np.array([], int)
        rest = np.setdiff1d(allowed, chosen, assume_unique=True)
        rest = best_first(rest)[: n - len(chosen)]
        return np.concatenate([chosen, rest]).astype(int)

    def ok(n: int) -> np.ndarray | None:
        chosen = pick(n)
        return chosen if chosen is not None and (n == 0 or rho[chosen].mean() >= target) else None

    lo, hi = 0, len(allowed)                 # largest feasible n (feasibility is close to monotone)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) is not None else (lo, mid - 1)
    keep = ok(lo) if lo else np.array([], int)
    keep_set = set(keep.tolist())
    starved = short_labels(lo + 1) if lo < len(allowed) else []
    # Only the allowed clips' decisions and reasons change (not a Python object per clip of the pool).
    tails = []
    mean = float(rho[keep].mean()) if len(keep) else float("nan")
    for i in allowed:
        if i in keep_set:
            tails.append(f"; estimated precision {rho[i]:.3f} (accepted set {mean:.3f} >= {target:.2f})")
        else:
            tails.append(f"; balance: more accepted clips would leave {', '.join(starved)} below "
                         f"{min_ratio:g} x its labelled share (estimated {rho[i]:.3f})" if starved else
                         f"; precision: estimated {rho[i]:.3f}, accepting it would take the accepted set "
                         f"below {target:.2f}")
    rejected = np.setdiff1d(allowed, keep, assume_unique=True)
    out.loc[out.index[rejected], "decision"] = "rejected"
    out["reason"] = append_reason(out["reason"], allowed, tails)
    return out


def voter_probs(predictions: pd.DataFrame | PoolPredictions, voters: Sequence[str], labels: Sequence[str]
                ) -> dict[str, pd.DataFrame]:
    """Each model voter's fold-averaged probabilities (`pool_probs`; the teacher is no model),
    each head looked up once (in a frame of every head, at 100,000 candidates each look-up
    filters 800,000 rows)."""
    return {voter: pool_probs(predictions, voter, labels) for voter in dict.fromkeys(voters)
            if voter != "teacher"}


def head_votes(rows: pd.DataFrame, voter: str, labels: Sequence[str]) -> pd.DataFrame:
    """clip_id, <voter>:label (categorical over `labels`; absent where the head has no
    probabilities), <voter>:confidence from one head's fold-averaged probabilities (`rows`:
    `pool_probs` of `voter` = "<fusion>/<head>", e.g. "moe/final" or "moe/expert:audio_text")."""
    if rows.empty:
        raise ValueError(f"voter {voter!r} is not among the predictions' heads")
    probs = rows.to_numpy()
    known = ~np.isnan(probs).any(axis=1)
    best = np.where(known, np.nan_to_num(probs, nan=-1.0).argmax(axis=1), -1)
    confidence = np.where(known, np.nan_to_num(probs, nan=0.0).max(axis=1), np.nan)
    return pd.DataFrame({"clip_id": rows.index.array,
                         f"{voter}:label": pd.Categorical.from_codes(best, categories=list(labels)),
                         f"{voter}:confidence": confidence}, copy=False)


def teacher_votes(answers: pd.DataFrame | Iterable[pd.DataFrame], name: str = "teacher") -> pd.DataFrame:
    """clip_id, teacher:label, teacher:confidence from answered teacher rows (scores as JSON),
    sorted by clip_id, as Arrow strings (not a Python string per clip, held all run). `answers`:
    a frame, or frames of it (storage.teacher_store.run_label_answers streams them)."""
    frames = [answers] if isinstance(answers, pd.DataFrame) else answers
    parts = []
    for frame in frames:
        ok = frame[(frame["status"] == "answered") & frame["label"].notna()]
        conf = [float((json.loads(s) if isinstance(s, str) else s or {}).get(lab, np.nan))
                for s, lab in zip(ok["scores"], ok["label"], strict=True)]
        parts.append(pd.DataFrame({"clip_id": pd.array(ok["clip_id"], dtype="str"),
                                   f"{name}:label": pd.array(ok["label"], dtype="str"),
                                   f"{name}:confidence": np.asarray(conf, dtype=np.float64)}))
    if not parts:
        return pd.DataFrame({"clip_id": pd.array([], dtype="str"), f"{name}:label": pd.array([], dtype="str"),
                             f"{name}:confidence": np.zeros(0)})
    votes = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    return votes.sort_values("clip_id", ignore_index=True)


def vote_table(pool_ids: Sequence[str], head_probs: Mapping[str, pd.DataFrame], teacher: pd.DataFrame | None,
               voters: Sequence[str], labels: Sequence[str]) -> pd.DataFrame:
    """One row per pool clip (`pool_ids`, unique) with every voter's label (categorical) and
    confidence (absent: NaN). `head_probs`: each model voter's probabilities (`voter_probs`);
    `teacher`: the teacher's votes (`teacher_votes`), read for the voter "teacher". Each
    voter's votes are placed by position, not merged (a merge per voter copied the growing
    table each time), and a label is a code, not a Python string per clip (at 100,000 clips
    and 4 voters those were ~30 MB)."""
    index = IdIndex(pool_ids, "clip {!r} is in the pool twice")
    # The label set, and any other label the teacher gave (it votes as it said).
    categories = list(labels)
    if teacher is not None and "teacher" in voters:
        said = pd.unique(teacher["teacher:label"].dropna().astype(str))
        categories += sorted(set(said) - set(categories))
    table: dict[str, object] = {"clip_id": pd.array(index.ids, dtype="str")}
    for voter in voters:
        codes = np.full(len(index), -1, np.int16)
        confidence = np.full(len(index), np.nan)
        votes = teacher if voter == "teacher" else head_votes(head_probs[voter], voter, labels)
        if votes is not None:                # no teacher: its votes stay absent
            at = index.positions(votes["clip_id"].array)
            inside = at >= 0
            said = pd.Categorical(votes[f"{voter}:label"], categories=categories).codes
            codes[at[inside]] = said[inside]
            confidence[at[inside]] = votes[f"{voter}:confidence"].to_numpy(np.float64)[inside]
        table[f"{voter}:label"] = pd.Categorical.from_codes(codes, categories=categories)
        table[f"{voter}:confidence"] = confidence
    return pd.DataFrame(table, copy=False)


def oof_confidences(oof: pd.DataFrame, truth: pd.DataFrame, voter: str,
                    labels: Sequence[str]) -> pd.DataFrame:
    """truth, label, confidence of one head's seed-averaged out-of-fold predictions, for
    `label_thresholds` (only human-labelled clips: `truth` has clip_id, label)."""
    return confidences(*oof_probs(oof, truth, voter, labels), labels)


def confidences(probs: np.ndarray, truth: np.ndarray, labels: Sequence[str]) -> pd.DataFrame:
    """truth, label, confidence from probabilities and true label indices (`oof_probs`)."""
    return pd.DataFrame({"truth": [labels[i] for i in truth],
                         "label": [labels[i] for i in probs.argmax(axis=1)],
                         "confidence": probs.max(axis=1)})


@dataclass
class RoundResult:
    decisions: pd.DataFrame              # clip_id, decision, label, confidence, reason (categorical)
    thresholds: dict[str, float]         # per label (selection "threshold"; empty otherwise)
    cv_weighted_f1: float                # the baseline head's CV weighted F1 on human-labelled clips
    accepted_by_label: dict[str, int]
    estimate: dict = field(default_factory=dict)   # temperature, teacher's estimated accuracy per label
    votes: pd.DataFrame | None = None    # the vote table, row for row with `decisions`
    voters: tuple[str, ...] = ()

    def records(self, chunk: int = DECIDE_CHUNK) -> Iterator[pd.DataFrame]:
        """The decisions as `clip_decisions` rows, `chunk` clips at a time: reason as text and
        the clip's votes as JSON (`vote_json`), made for a chunk when it is recorded (at
        100,000 candidates the votes' JSON of every clip was ~25 MB)."""
        if self.votes is None:
            raise ValueError("the round's vote table is not here: its votes cannot be written")
        decisions, votes = self.decisions, self.votes
        if len(decisions) != len(votes):
            raise ValueError(f"{len(decisions)} decisions for a vote table of {len(votes)} clips")
        apart = np.flatnonzero(np.asarray(decisions["clip_id"].array != votes["clip_id"].array, dtype=bool))
        if len(apart):
            raise ValueError(f"decisions and votes are not row for row from clip "
                             f"{decisions['clip_id'].iloc[apart[0]]!r}")
        for start in range(0, len(decisions), chunk):
            part = decisions.iloc[start:start + chunk]
            yield part.assign(reason=part["reason"].astype("str"),
                              votes=vote_json(votes.iloc[start:start + chunk], self.voters))


def mine_round(pool_ids: Sequence[str], predictions: pd.DataFrame | PoolPredictions, oof: pd.DataFrame,
               human: pd.DataFrame, teacher: pd.DataFrame | None, labels: Sequence[str],
               voters: Sequence[str], policy: MiningPolicy, target_precision: float = 0.95,
               already: dict[str, int] | None = None) -> RoundResult:
    """Decide every pool clip from this round's model predictions and the teacher's answers.

    `teacher`: the teacher's votes (`teacher_votes` of its answers, made once per run: the
    answers do not change between rounds; None: no teacher). `human`: clip_id, label of the
    human-labelled clips (thresholds, calibration and the validation score come from their
    out-of-fold predictions only, never from pseudo-labelled clips); `already`: clips accepted
    in earlier rounds per label (for the share floors).
    """
    from models.metrics import evaluate

    probs, truth = oof_probs(oof, human, policy.baseline, labels)
    conf = confidences(probs, truth, labels)
    heads = voter_probs(predictions, [*voters, policy.baseline], labels)
    votes = vote_table(pool_ids, heads, teacher, voters, labels)
    baseline = heads[policy.baseline]
    del heads                            # the voters' probabilities are votes now
    # Each step's freed heap is handed back before the next (at 100,000 candidates the steps
    # left ~90 MB of it resident until the round was recorded).
    trim_heap()
    share = human["label"].value_counts(normalize=True).to_dict()
    thresholds, estimate = {}, {}
    if policy.selection == "threshold":
        thresholds = label_thresholds(conf, labels, target_precision=target_precision)
        decisions = balance(decide(votes, voters, thresholds, policy), share, policy.min_share_ratio)
    else:
        decisions = decide(votes, voters, None, policy)
        trim_heap()
        temperature = fit_temperature(probs, truth)
        said = label_codes(votes, policy.teacher, labels) if policy.teacher in voters else None
        rho, confusion = estimated_precision(decisions, pool_rows(votes["clip_id"].array, baseline), said,
                                             labels, temperature)
        trim_heap()
        decisions = select(decisions, rho, target_precision, share, policy.min_share_ratio, already)
        estimate = {"temperature": temperature,
                    "teacher_accuracy": {lab: round(float(confusion[i, i]), 4) for i, lab in enumerate(labels)
                                         if lab in share}}
    cv = evaluate(conf["truth"].tolist(), conf["label"].tolist(), labels)["weighted_f1"] if len(conf) else 0.0
    accepted = decisions.loc[decisions["decision"] == "accepted", "label"].value_counts().to_dict()
    return RoundResult(decisions, thresholds, float(cv), {k: int(v) for k, v in accepted.items()}, estimate,
                       votes, tuple(voters))


def oof_probs(oof: pd.DataFrame, truth: pd.DataFrame, voter: str, labels: Sequence[str]
              ) -> tuple[np.ndarray, np.ndarray]:
    """(seed-averaged out-of-fold probabilities of one head, true label indices) of the
    human-labelled clips (`truth`: clip_id, label)."""
    fusion, head = voter.split("/", 1)
    rows = oof[(oof["fusion"] == fusion) & (oof["head"] == head)]
    mean = rows.groupby("clip_id")[[f"p_{lab}" for lab in labels]].mean().dropna()
    mean = mean.loc[mean.index.intersection(truth["clip_id"])]
    y = truth.set_index("clip_id").loc[mean.index, "label"]
    return mean.to_numpy(np.float64), np.array([list(labels).index(lab) for lab in y])


def pool_probs(predictions: pd.DataFrame | PoolPredictions, voter: str, labels: Sequence[str]
               ) -> pd.DataFrame:
    """One head's fold-averaged probabilities per clip (index clip_id): read from the pool's
    predictions (`PoolPredictions.probs`, what the flows hand on), or the 'mean' rows of a
    frame of them (the ensemble's members too: tasks/finalize). No rows for a head it lacks."""
    fusion, _, head = voter.partition("/")
    if not isinstance(predictions, pd.DataFrame):
        return predictions.probs(fusion, head)
    rows = predictions[(predictions["seed"] == "mean") & (predictions["fusion"] == fusion)
                       & (predictions["head"] == head)]
    return rows.set_index("clip_id")[[f"p_{lab}" for lab in labels]]


def pool_heads(predictions: pd.DataFrame | PoolPredictions) -> list[str]:
    """The "<fusion>/<head>" of every head `pool_probs` can read, sorted."""
    if not isinstance(predictions, pd.DataFrame):
        return predictions.heads
    mean = predictions[predictions["seed"] == "mean"]
    return sorted(set(mean["fusion"].astype(str) + "/" + mean["head"].astype(str)))


def accepted_labels(decisions: pd.DataFrame, weighting: str = "hard") -> pd.DataFrame:
    """clip_id, label, weight of the accepted clips: weight 1 ("hard") or the confidence."""
    acc = decisions[decisions["decision"] == "accepted"]
    weight = acc["confidence"].astype(float) if weighting == "confidence" else 1.0
    frame = pd.DataFrame({"clip_id": acc["clip_id"], "label": acc["label"], "weight": weight})
    return frame.reset_index(drop=True)


def pseudo_labels(accepted: pd.DataFrame, weighting: str = "hard") -> pd.DataFrame:
    """clip_id, label, weight of recorded acceptances (clip_id, label, confidence)."""
    return accepted_labels(accepted.assign(decision="accepted"), weighting)


def resume_rounds(done: Sequence[dict], accepted: pd.DataFrame, pool: Sequence[str], weighting: str
                  ) -> tuple[pd.DataFrame | None, pd.api.extensions.ExtensionArray, float | None]:
    """(pseudo-labels so far, remaining pool, best CV F1) of a run whose rounds `done` (their
    summaries) are recorded, with `accepted` its accepted decisions (clip_id, label,
    confidence): what the next round starts from. Nothing recorded: the fresh start."""
    if not done:
        return None, pd.array(pool, dtype="str", copy=False), None
    labels = pseudo_labels(accepted, weighting)
    used = [r["cv_weighted_f1"] for r in done if not r["stopped"]]
    return labels, remaining_pool(pool, labels["clip_id"]), max(used) if used else None


def label_counts(accepted: pd.DataFrame | None) -> dict[str, int]:
    """Accepted pseudo-labels so far, per label."""
    if accepted is None or not len(accepted):
        return {}
    return {str(k): int(v) for k, v in accepted["label"].value_counts().items()}


def discard_round(decisions: pd.DataFrame, why: str) -> pd.DataFrame:
    """A round whose pseudo-labels are not used: its acceptances become rejections, saying why."""
    out = decisions.copy(deep=False)     # copy-on-write: only the columns set below are new
    hit = (out["decision"] == "accepted").to_numpy()
    out.loc[hit, "decision"] = "rejected"
    out["reason"] = append_reason(out["reason"], np.flatnonzero(hit), f"; round discarded: {why}")
    return out


def mark_new(decisions: pd.DataFrame, mined_before: Sequence[str]) -> pd.DataFrame:
    """The decisions with `new_clip`: true for a clip no earlier mining run decided (added to
    the dataset since, or never usable before)."""
    return decisions.assign(new_clip=~isin(decisions["clip_id"].array, mined_before))


def new_clip_counts(decisions: pd.DataFrame) -> dict[str, int]:
    """How many of a round's clips are new to mining, and how many of those it accepted."""
    new = decisions["new_clip"].astype(bool)
    return {"new_in_pool": int(new.sum()),
            "new_accepted": int((new & (decisions["decision"] == "accepted")).sum())}


def merge_accepted(accepted: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame:
    """Pseudo-labels accepted so far plus this round's (a clip is accepted at most once)."""
    if accepted is None:
        return new
    return pd.concat([accepted, new[~new["clip_id"].isin(accepted["clip_id"])]], ignore_index=True)


def stop_reason(result: RoundResult, best_cv: float | None, max_drop: float = 0.0) -> str | None:
    """Why the rounds end after this one: validation F1 fell (this round's model, trained with
    the previous rounds' pseudo-labels, is worse on the human labels), or nothing was accepted."""
    if best_cv is not None and result.cv_weighted_f1 < best_cv - max_drop:
        return (f"CV weighted F1 on human labels fell to {result.cv_weighted_f1:.3f} "
                f"from {best_cv:.3f}: this round's decisions are recorded but not used")
    if not sum(result.accepted_by_label.values()):
        return "no clip accepted"
    return None


def usable_pool(registry: pd.DataFrame) -> pd.api.extensions.ExtensionArray:
    """The unlabelled clips that can be mined: candidates whose media are usable, sorted, as
    one Arrow string array (a Python list of them was ~100 bytes a clip, held all run long)."""
    pool = registry.loc[(registry["split"] == "candidate") & registry["status"].isin(USABLE), "clip_id"]
    return pool.astype("str").sort_values(ignore_index=True).array


def remaining_pool(pool: Sequence[str], taken: Sequence[str]) -> pd.api.extensions.ExtensionArray:
    """`pool` without the clips `taken`, in its order (an Arrow string array)."""
    pool = pd.array(pool, dtype="str", copy=False)
    return pool[~isin(pool, taken)]


mine_round_task = task(mine_round, name="mine-round", cache_policy=NO_CACHE)
