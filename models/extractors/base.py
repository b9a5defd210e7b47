"""The extractor contract shared by every modality.

An extractor turns a batch of clips into one FeatureRow per clip: a clip-level vector and,
where the modality has one, a frame- or token-level sequence (T x D). Its `key` (name,
version and a hash of its parameters) plus a clip's media key decide whether a stored row
can be reused. Extractors follow the scikit-learn habit: `__init__` stores settings, heavy
models load lazily in `setup()`, and `extract` changes nothing but its own caches.

Rows of clips that cannot be extracted carry status `missing` (the modality is absent: no
face found, no audio stream, no transcript) or `error` (decoding or the model failed), a
reason, and no vector: downstream models mask them instead of reading zeros as a label.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True)
class ClipInput:
    """What an extractor needs to know about a clip (a row of the clip registry)."""

    clip_id: str
    video_path: str | None = None
    audio_path: str | None = None
    text: str | None = None
    has_video: bool = False
    has_audio: bool = False
    has_text: bool = False
    video_sha256: str | None = None
    audio_sha256: str | None = None


@dataclass
class FeatureRow:
    clip_id: str
    status: str = "ok"                      # ok, missing, error
    reason: str | None = None
    vector: np.ndarray | None = None        # (D,) float32
    sequence: np.ndarray | None = None      # (T, D_seq) float32
    extra: dict[str, Any] = field(default_factory=dict)   # e.g. the ASR transcript

    @classmethod
    def missing(cls, clip_id: str, reason: str) -> FeatureRow:
        return cls(clip_id, status="missing", reason=reason)

    @classmethod
    def failed(cls, clip_id: str, reason: str) -> FeatureRow:
        return cls(clip_id, status="error", reason=reason)


def params_hash(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]


class Extractor:
    """Base class. Subclasses set name, version, modality, and implement `extract`."""

    name: ClassVar[str]
    version: ClassVar[int] = 1
    modality: ClassVar[str]                 # visual, audio or text: picks the media key

    def params(self) -> dict:
        """Everything that changes the output; part of the cache key."""
        return {k: v for k, v in vars(self).items() if not k.endswith("_")}

    @property
    def key(self) -> str:
        return f"{self.name}-v{self.version}-{params_hash(self.params())}"

    def media_key(self, clip: ClipInput) -> str | None:
        """The content the output depends on: a new file or transcript invalidates the row."""
        if self.modality == "visual":
            return clip.video_sha256
        if self.modality == "audio":
            return clip.audio_sha256 or clip.video_sha256
        text = clip.text or ""
        return hashlib.sha256(f"{clip.audio_sha256 or clip.video_sha256}|{text}".encode()).hexdigest()

    def setup(self) -> None:
        """Load models; called once per process before the first batch."""

    def extract(self, clips: list[ClipInput]) -> list[FeatureRow]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params()})"


def stats_pool(seq: np.ndarray) -> np.ndarray:
    """Clip-level statistics of a (T, D) sequence: mean, std, min, max and mean |delta|."""
    seq = np.asarray(seq, dtype=np.float32)
    delta = np.abs(np.diff(seq, axis=0)).mean(axis=0) if len(seq) > 1 else np.zeros(seq.shape[1], np.float32)
    return np.concatenate([seq.mean(0), seq.std(0), seq.min(0), seq.max(0), delta]).astype(np.float32)
