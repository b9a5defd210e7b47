"""The teacher interface: a clip in, an `Answer` out, and the cache key of that question.

A teacher is shaped like a scikit-learn estimator: `__init__` stores settings, `fit(labels)`
checks them against the dataset's label set and loads what it needs (an answers file, a
predictions frame, an API client), and `ask(clip)` puts one question to the backend. Retries,
rate limits, budget and cache live around it (`models.teachers.runner`), not in it.

Statuses of an answer (the `teacher_answers.status` column):
- answered: a label from the label set, a score for every label.
- unparseable: the backend answered, but not with valid JSON, a known label and all scores;
  the raw text is kept and nothing is guessed.
- refused: the backend declined (safety block, or a replay line with no label).
- failed: no answer (errors after the retries, a timeout, a 400/403/404); never cached.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any

ANSWERED, UNPARSEABLE, REFUSED, FAILED = "answered", "unparseable", "refused", "failed"
NOT_ASKED = "not_asked"
# Statuses the backend was paid for: they are served from the cache, never asked again.
CACHED_STATUSES = (ANSWERED, UNPARSEABLE, REFUSED)

LABEL, ENRICH = "label", "enrich"       # the two questions a teacher can be asked


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_json(value: Any) -> str:
    """Hash of a JSON-able value, independent of key order."""
    return sha256_text(json.dumps(value, sort_keys=True, separators=(",", ":"), default=str))


# Slots (no __dict__ per object): a 100,000-clip pool holds a Clip and an Answer per clip.
@dataclass(frozen=True, slots=True)
class Clip:
    """What a teacher may see of one clip (a row of the catalog's `clips`)."""

    clip_id: str
    name: str
    video_path: str | None = None
    audio_path: str | None = None
    text: str | None = None
    video_sha256: str | None = None
    audio_sha256: str | None = None
    duration_s: float | None = None

    @property
    def media_sha256(self) -> str:
        """Hash of everything a teacher is shown: video, audio and subtitle."""
        return sha256_json([self.video_sha256, self.audio_sha256, self.text or ""])


@dataclass(slots=True)
class Answer:
    """One teacher answer for one clip and question (a `teacher_answers` row, minus the key)."""

    status: str
    label: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    reasoning: str | None = None
    modality_shares: dict[str, float] | None = None
    raw_text: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    latency_s: float | None = None
    cost_usd: float | None = None
    error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


class TeacherError(RuntimeError):
    """A request that got no answer. `retryable`: 408/429/5xx, timeouts, dropped connections."""

    def __init__(self, message: str, retryable: bool, code: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.code = code


def cache_key(teacher: str, model: str, question: str, media_sha256: str, prompt_sha256: str,
              params_sha256: str) -> str:
    """The cache key: one answer per (media, prompt, model, generation parameters)."""
    return sha256_json({"teacher": teacher, "model": model, "question": question,
                        "media": media_sha256, "prompt": prompt_sha256, "params": params_sha256})


class Teacher(ABC):
    """A source of labels for clips. Subclasses set `kind` and implement fit/ask."""

    kind: str = "teacher"

    # Set by fit(): the identity of the questions this teacher asks.
    labels_: tuple[str, ...]
    model_: str
    prompt_sha256_: str
    params_sha256_: str

    @abstractmethod
    def fit(self, labels: tuple[str, ...]) -> Teacher:
        """Check the settings against the label set, load what is needed; returns self."""

    @abstractmethod
    def ask(self, clip: Clip, question: str = LABEL) -> Answer:
        """One request to the backend. Raises TeacherError when there is no answer."""

    def prompt_sha256(self, question: str = LABEL) -> str:
        return self.prompt_sha256_

    def key(self, clip: Clip, question: str = LABEL) -> str:
        return cache_key(self.kind, self.model_, question, clip.media_sha256,
                         self.prompt_sha256(question), self.params_sha256_)

    def estimate_cost(self, clip: Clip, question: str = LABEL) -> float:
        """Expected cost of one request in USD, before it is made (0 for local teachers)."""
        return 0.0

    def supports(self, question: str) -> bool:
        return question == LABEL
