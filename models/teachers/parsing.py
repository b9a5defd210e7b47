"""Validation of a teacher's JSON answer: valid, or unparseable with the reason; never guessed."""

from __future__ import annotations

import json
import math
import re

from models.teachers.base import ANSWERED, UNPARSEABLE, Answer
from storage.labels import normalize_label

# A model asked for JSON sometimes wraps it in one Markdown code fence; removing the fence
# changes no content, so it is not a guess.
FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n?```\s*$", re.DOTALL)


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) and value >= 0 else None


def parse_scores(raw, labels: tuple[str, ...], require_all: bool = True) -> tuple[dict, str | None]:
    """Scores keyed by label set member, or the reason they are not usable."""
    if not isinstance(raw, dict):
        return {}, "scores is not an object"
    scores = {}
    for key, value in raw.items():
        label = normalize_label(str(key))
        if label not in labels:
            return {}, f"score for unknown label {key!r}"
        number = _number(value)
        if number is None:
            return {}, f"score of {key!r} is not a non-negative number: {value!r}"
        scores[label] = number
    missing = [x for x in labels if x not in scores]
    if require_all and missing:
        return {}, f"missing scores for {', '.join(missing)}"
    return scores, None


def parse_label(raw, labels: tuple[str, ...]) -> tuple[str | None, str | None]:
    if not isinstance(raw, str):
        return None, f"label is not a string: {raw!r}"
    label = normalize_label(raw)
    if label not in labels:
        return None, f"label {raw!r} is not in the label set"
    return label, None


def parse_shares(raw) -> dict[str, float] | None:
    """Modality shares are informative only: kept when well-formed, dropped otherwise."""
    if not isinstance(raw, dict):
        return None
    shares = {str(k): _number(v) for k, v in raw.items()}
    return shares if all(v is not None for v in shares.values()) else None


def parse_answer(text: str | None, labels: tuple[str, ...]) -> Answer:
    """An answer from the model's text (the default prompt's JSON): answered or unparseable."""
    if text is None or not text.strip():
        return Answer(UNPARSEABLE, raw_text=text, error="empty answer")
    match = FENCE.match(text)
    try:
        data = json.loads(match.group(1) if match else text)
    except json.JSONDecodeError as exc:
        return Answer(UNPARSEABLE, raw_text=text, error=f"not JSON: {exc.msg}")
    if not isinstance(data, dict):
        return Answer(UNPARSEABLE, raw_text=text, error="JSON is not an object")
    label, problem = parse_label(data.get("label"), labels)
    scores, score_problem = parse_scores(data.get("scores"), labels)
    problem = problem or score_problem
    if problem:
        return Answer(UNPARSEABLE, raw_text=text, error=problem)
    reasoning = data.get("reasoning")
    return Answer(ANSWERED, label=label, scores=scores, raw_text=text,
                  reasoning=reasoning if isinstance(reasoning, str) else None,
                  modality_shares=parse_shares(data.get("modality_shares")))
