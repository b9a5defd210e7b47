"""The local teacher: a trained model of the project, for runs without API access.

It reads a predictions frame with `clip_id` and one probability column per label, named
`p_<label>` (e.g. `p_happy`): the frame `mersemi predict` is to write. An optional `model`
column holding several models' rows is averaged (a small ensemble). The answer is the arg-max
label with the probabilities as scores.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from models.teachers.base import ANSWERED, Answer, Clip, Teacher, TeacherError, sha256_json


def probability_columns(labels: tuple[str, ...]) -> list[str]:
    return [f"p_{x}" for x in labels]


def check_predictions(frame: pd.DataFrame, labels: tuple[str, ...]) -> None:
    missing = [c for c in ["clip_id", *probability_columns(labels)] if c not in frame.columns]
    if missing:
        raise ValueError(f"predictions frame lacks column(s) {', '.join(missing)} "
                         "(expected clip_id and p_<label> for every label)")


class LocalTeacher(Teacher):
    """Predictions of a trained model as teacher answers."""

    kind = "local"

    def __init__(self, predictions: pd.DataFrame | str | Path, model: str = "local") -> None:
        self.predictions = predictions
        self.model = model

    def __repr__(self) -> str:
        source = "frame" if isinstance(self.predictions, pd.DataFrame) else str(self.predictions)
        return f"LocalTeacher(predictions={source!r}, model={self.model!r})"

    def fit(self, labels: tuple[str, ...]) -> LocalTeacher:
        frame = (self.predictions if isinstance(self.predictions, pd.DataFrame)
                 else pd.read_parquet(Path(self.predictions)))
        self.labels_ = tuple(labels)
        check_predictions(frame, self.labels_)
        columns = probability_columns(self.labels_)
        self.probabilities_ = frame.groupby("clip_id")[columns].mean()
        self.model_ = self.model
        digest = pd.util.hash_pandas_object(self.probabilities_, index=True).to_numpy().tobytes()
        self.prompt_sha256_ = hashlib.sha256(digest).hexdigest()
        self.params_sha256_ = sha256_json({"labels": self.labels_})
        return self

    def ask(self, clip: Clip, question: str = "label") -> Answer:
        if clip.clip_id not in self.probabilities_.index:
            raise TeacherError(f"no prediction for {clip.clip_id}", False)
        row = self.probabilities_.loc[clip.clip_id]
        if row.isna().any():              # a model that could not score this clip
            raise TeacherError(f"incomplete prediction for {clip.clip_id}", False)
        scores = {label: float(row[f"p_{label}"]) for label in self.labels_}
        return Answer(ANSWERED, label=max(scores, key=scores.get), scores=scores,
                      raw_text=None, tokens_in=0, tokens_out=0, cost_usd=0.0)
