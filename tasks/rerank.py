"""Stage: rule-based re-ranking of final scores (the "human preference alignment" step).

Input: final class probabilities per candidate clip (clip_id, p_<label>), the teacher's votes
(clip_id, teacher:label, teacher:confidence), and a list of rules.
Output: the re-ranked label and confidence per clip, and one row per change a rule made
(clip_id, rule, before, after, detail): every changed prediction names the rule that changed it.

Rules, applied in the order given, each to the previous rule's output:
- `prior` (prior correction toward the expected label distribution): one weight per label,
  fitted so that the mean re-weighted probability over the scored clips equals the target
  prior (the labelled set's label shares), so a label the model under-predicts on this pool
  regains its expected share. `strength` in [0, 1] is the exponent on the weights.
- `demote` (MER2025 first place demoted "worried"): a clip whose top label is `label` keeps it
  only when its margin over the runner-up is at least `margin`; otherwise the runner-up wins.
- `teacher_override` ("Gemini modification"): where the model is uncertain (confidence below
  `model_below`) and the teacher is confident (at least `teacher_above`) and disagrees, the
  teacher's label wins.
- `teacher_posterior` (the same idea, weighed rather than thresholded): the model's
  probabilities, temperature-calibrated on the validation clips, are combined with the
  teacher's answer through the teacher's confusion matrix, estimated by EM on the scored clips
  (models/calibration.py, as mining estimates its precision); where the combined posterior's
  label differs, it wins. The teacher is trusted per label exactly as far as it agrees with
  the calibrated model on the pool.
Only `prior` changes probabilities; the others change labels. Either way the changes table
records each clip whose label moved, and by which rule.

Rules are validated on out-of-fold predictions of human-labelled clips (`select_rules`): a rule
is kept only when it raises the weighted F1 there. `teacher_override` can only be validated
where the teacher answered human-labelled clips; without such answers it is skipped, and the
reason says so (forcing it is the user's explicit choice, `validate=False`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from models.calibration import calibrate, fit_temperature, label_indices, teacher_posterior
from models.metrics import evaluate

RULES = ("prior", "demote", "teacher_override", "teacher_posterior")


@dataclass(frozen=True)
class Rule:
    name: str                              # one of RULES
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in RULES:
            raise ValueError(f"unknown rule {self.name!r}; choose from {', '.join(RULES)}")
        allowed = {"prior": {"strength"}, "demote": {"label", "margin"},
                   "teacher_override": {"model_below", "teacher_above"},
                   "teacher_posterior": set()}[self.name]
        unknown = set(self.params) - allowed
        if unknown:
            raise ValueError(f"rule {self.name}: unknown parameter(s) {', '.join(sorted(unknown))}; "
                             f"it takes {', '.join(sorted(allowed))}")
        if self.name == "demote" and "label" not in self.params:
            raise ValueError("rule demote needs a label, e.g. demote:label=worried,margin=0.2")

    @property
    def key(self) -> str:
        """The rule as recorded: name and parameters, e.g. `demote(label=worried,margin=0.2)`."""
        args = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.name}({args})" if args else self.name

    @classmethod
    def parse(cls, text: str) -> Rule:
        """`name` or `name:key=value,key=value` (numbers parsed as floats)."""
        name, _, rest = text.strip().partition(":")
        params: dict = {}
        for item in filter(None, (p.strip() for p in rest.split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"rule {text!r}: expected key=value, got {item!r}")
            try:
                params[key.strip()] = float(value)
            except ValueError:
                params[key.strip()] = value.strip()
        return cls(name.strip(), params)


DEFAULT_RULES = ("prior:strength=1.0", "demote:label=worried,margin=0.1",
                 "teacher_override:model_below=0.5,teacher_above=0.9", "teacher_posterior")
# Parameters tried on validation when a rule is selected (the rule's own value is replaced).
DEFAULT_GRID = {"strength": (0.25, 0.5, 1.0), "margin": (0.05, 0.1, 0.2, 0.3),
                "model_below": (0.4, 0.5, 0.6), "teacher_above": (0.8, 0.9, 0.95)}


def _probs(frame: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
    return frame[[f"p_{lab}" for lab in labels]].to_numpy(np.float64)


def prior_correction(p: np.ndarray, target: np.ndarray, strength: float = 1.0,
                     iterations: int = 200) -> np.ndarray:
    """Probabilities re-weighted per label so that their mean over the scored clips matches
    `target` (iterative proportional fitting of one weight per label); the weights are raised
    to `strength`, so 0 changes nothing and 1 matches the target prior exactly."""
    target = np.clip(np.asarray(target, np.float64), 1e-6, None)
    target = target / target.sum()
    weight = np.ones(p.shape[1])
    for _ in range(iterations):
        q = p * weight
        q /= q.sum(axis=1, keepdims=True)
        step = target / q.mean(axis=0).clip(1e-9)
        weight *= step
        if np.allclose(step, 1.0, atol=1e-5):
            break
    q = p * weight**strength
    return q / q.sum(axis=1, keepdims=True)


def apply_rules(scores: pd.DataFrame, labels: Sequence[str], rules: Sequence[Rule],
                teacher: pd.DataFrame | None = None, target_prior: dict[str, float] | None = None,
                temperature: float = 1.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(final, changes): final = clip_id, label, confidence, model_label, rules (the names of the
    rules that changed the clip, ';'-joined); changes = clip_id, rule, before, after, detail."""
    labels = list(labels)
    p = _probs(scores, labels)
    ids = scores["clip_id"].astype(str).to_numpy()
    label = np.array([labels[i] for i in p.argmax(axis=1)], dtype=object)
    model_label = label.copy()
    conf = p.max(axis=1)
    changes: list[dict] = []
    tvotes = (teacher.set_index("clip_id") if teacher is not None and len(teacher)
              else pd.DataFrame(columns=["teacher:label", "teacher:confidence"]))

    def change(i: int, rule: Rule, after: str, detail: str) -> None:
        changes.append({"clip_id": ids[i], "rule": rule.key, "before": label[i], "after": after,
                        "detail": detail})
        label[i] = after

    for rule in rules:
        if rule.name == "prior":
            if not target_prior:
                raise ValueError("rule prior needs the target prior (the labelled label shares)")
            target = np.array([target_prior.get(lab, 0.0) for lab in labels])
            p = prior_correction(p, target, float(rule.params.get("strength", 1.0)))
            new = p.argmax(axis=1)
            for i in np.flatnonzero(np.array([labels[j] for j in new], dtype=object) != label):
                change(i, rule, labels[new[i]], f"p={p[i, new[i]]:.2f} after prior correction")
            conf = p.max(axis=1)
        elif rule.name == "demote":
            target_label, margin = rule.params["label"], float(rule.params.get("margin", 0.1))
            if target_label not in labels:
                raise ValueError(f"rule demote: {target_label!r} is not a label ({', '.join(labels)})")
            k = labels.index(target_label)
            order = np.argsort(-p, axis=1)
            for i in np.flatnonzero(label == target_label):
                runner = order[i, 1] if order[i, 0] == k else order[i, 0]
                gap = p[i, k] - p[i, runner]
                if gap < margin:
                    change(i, rule, labels[runner], f"margin {gap:.2f} < {margin:.2f}")
                    conf[i] = p[i, runner]
        elif rule.name == "teacher_posterior":
            said = (tvotes["teacher:label"].reindex(ids).to_numpy() if len(tvotes)
                    else np.full(len(ids), None))
            t = label_indices(said, labels)
            q, confusion = teacher_posterior(calibrate(p, temperature), t)
            best = q.argmax(axis=1)
            for i in np.flatnonzero((t >= 0) & (best == t)):
                if labels[best[i]] != label[i]:
                    cur = labels.index(label[i])
                    change(i, rule, labels[best[i]],
                           f"teacher says {labels[t[i]]} (estimated accuracy on it "
                           f"{confusion[t[i], t[i]]:.2f}); posterior {q[i, best[i]]:.2f} vs {q[i, cur]:.2f}")
                    conf[i] = q[i, best[i]]
        else:
            below = float(rule.params.get("model_below", 0.5))
            above = float(rule.params.get("teacher_above", 0.9))
            for i, cid in enumerate(ids):
                if cid not in tvotes.index:
                    continue
                t_label, t_conf = tvotes.at[cid, "teacher:label"], float(tvotes.at[cid, "teacher:confidence"])
                if (isinstance(t_label, str) and t_label != label[i] and t_label in labels
                        and conf[i] < below and t_conf >= above):
                    change(i, rule, t_label, f"model {conf[i]:.2f} < {below:.2f}, teacher {t_conf:.2f} "
                                             f">= {above:.2f}")
                    conf[i] = t_conf
    changed: dict[str, list[str]] = {}
    for c in changes:
        changed.setdefault(c["clip_id"], []).append(c["rule"])
    final = pd.DataFrame({"clip_id": ids, "label": label.astype(str), "confidence": conf,
                          "model_label": model_label.astype(str),
                          "rules": [";".join(changed.get(c, [])) for c in ids]})
    return final, pd.DataFrame(changes, columns=["clip_id", "rule", "before", "after", "detail"])


@dataclass
class RuleChoice:
    rule: Rule
    kept: bool
    reason: str
    validation_f1: float | None = None     # weighted F1 on the labelled clips with the rule


def select_rules(oof: pd.DataFrame, truth: pd.DataFrame, labels: Sequence[str], rules: Sequence[Rule],
                 teacher: pd.DataFrame | None = None, target_prior: dict[str, float] | None = None,
                 grid: dict[str, Sequence[float]] | None = None, min_gain: float = 0.0,
                 min_teacher_clips: int = 30, temperature: float = 1.0) -> list[RuleChoice]:
    """Keep, in order, each rule that raises the weighted F1 of out-of-fold predictions of the
    human-labelled clips (`oof`: clip_id, p_<label>; `truth`: clip_id, label) by more than
    `min_gain`. A parameter listed in `grid` (e.g. {"margin": [0.05, 0.1, 0.2]}) is chosen there.
    """
    truth_by = truth.set_index("clip_id")["label"]
    oof = oof[oof["clip_id"].isin(truth_by.index)].reset_index(drop=True)
    y = truth_by.loc[oof["clip_id"]].tolist()

    def score(chosen: list[Rule]) -> float:
        final, _ = apply_rules(oof, labels, chosen, teacher, target_prior, temperature)
        return evaluate(y, final["label"].tolist(), labels)["weighted_f1"]

    kept: list[Rule] = []
    best = score(kept)
    out = []
    for rule in rules:
        answered = 0 if teacher is None else int(teacher["clip_id"].isin(oof["clip_id"]).sum())
        if rule.name == "teacher_override" and answered < min_teacher_clips:
            out.append(RuleChoice(rule, False, f"skipped: the teacher answered {answered} human-labelled "
                                               f"clips, fewer than {min_teacher_clips} to validate it"))
            continue
        if rule.name == "teacher_posterior" and answered < min_teacher_clips:
            # Nothing to validate it on: it rests on the EM estimate of the teacher's confusion.
            out.append(RuleChoice(rule, True, f"kept without validation: the teacher answered {answered} "
                                              "human-labelled clips; its confusion matrix is estimated "
                                              "by EM on the scored clips"))
            kept.append(rule)
            continue
        candidates = [rule]
        for key, values in (grid or {}).items():
            if key in rule.params:
                candidates = [replace(c, params={**c.params, key: v}) for c in candidates for v in values]
        scored = [(score([*kept, c]), c) for c in candidates]
        f1, cand = max(scored, key=lambda s: s[0])
        if f1 > best + min_gain:
            out.append(RuleChoice(cand, True, f"validation weighted F1 {best:.4f} -> {f1:.4f}", f1))
            kept.append(cand)
            best = f1
        else:
            out.append(RuleChoice(cand, False, f"validation weighted F1 {best:.4f} -> {f1:.4f}: no gain", f1))
    return out


def choices_summary(choices: Sequence[RuleChoice]) -> list[dict]:
    """Per rule tried: its key, name and parameters, kept or not, why, the validation F1 with it."""
    return [{"rule": c.rule.key, **asdict(c.rule), "kept": c.kept, "reason": c.reason,
             "validation_f1": c.validation_f1} for c in choices]


def rerank(scores: pd.DataFrame, validation: pd.DataFrame, human: pd.DataFrame, labels: Sequence[str],
           rules: Sequence[str], teacher: pd.DataFrame | None = None, validate: bool = True
           ) -> tuple[pd.DataFrame, pd.DataFrame, list[RuleChoice]]:
    """The whole stage: parse `rules`, keep those that help on `validation` (ensemble scores of
    the human-labelled clips, out of fold; all of them when `validate` is false), and apply the
    kept ones to `scores`. Returns (final, changes with the rule's `step`, choices)."""
    parsed = [Rule.parse(r) for r in rules]
    prior = human["label"].value_counts(normalize=True).to_dict()
    truth = human.set_index("clip_id").loc[validation["clip_id"], "label"]
    temperature = fit_temperature(validation[[f"p_{lab}" for lab in labels]].to_numpy(np.float64),
                                  label_indices(truth.to_numpy(), labels))
    if validate:
        choices = select_rules(validation, human, labels, parsed, teacher, prior, grid=DEFAULT_GRID,
                               temperature=temperature)
    else:
        choices = [RuleChoice(r, True, "applied without validation (validate=False)") for r in parsed]
    kept = [c.rule for c in choices if c.kept]
    final, changes = apply_rules(scores, labels, kept, teacher, prior, temperature)
    steps = {r.key: i for i, r in enumerate(kept, start=1)}
    changes.insert(2, "step", changes["rule"].map(steps).astype("int64"))
    return final, changes, choices


rerank_task = task(rerank, name="rerank", cache_policy=NO_CACHE)
