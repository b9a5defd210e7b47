"""Decoded media of one clip, shared by every extractor that runs on it in a batch.

Frames are decoded once per sampling rate, faces detected once per detector, audio decoded
once: the visual, AU and face branches (and the audio extractors) then cost only their own
model. A ClipMedia lives for one batch; nothing is kept across batches.
"""

from __future__ import annotations

import cv2
import numpy as np

from models.extractors.base import ClipInput
from models.faces import Box, FaceDetector, detect_faces
from models.media import MAX_AUDIO_SECONDS, SAMPLE_RATE, MediaError, load_audio, sample_frames


class ClipMedia:
    def __init__(self, clip: ClipInput, max_side: int = 640) -> None:
        self.clip = clip
        self.max_side = max_side
        self._frames: dict[tuple[float, int], tuple[list[np.ndarray], list[float]] | MediaError] = {}
        self._faces: dict[tuple[float, int, str], list[tuple[np.ndarray, Box | None]]] = {}
        self._audio: np.ndarray | MediaError | None = None

    def frames(self, fps: float, max_frames: int) -> tuple[list[np.ndarray], list[float]]:
        """Sampled RGB frames, downscaled so the long side is at most max_side. Raises MediaError."""
        key = (fps, max_frames)
        if key not in self._frames:
            try:
                if not self.clip.has_video or not self.clip.video_path:
                    raise MediaError("the clip has no usable video stream")
                # Shrunk as each frame is decoded: 32 full-size 4K frames would hold 800 MB.
                self._frames[key] = sample_frames(self.clip.video_path, fps, max_frames, self._shrink)
            except MediaError as exc:
                self._frames[key] = exc
        value = self._frames[key]
        if isinstance(value, MediaError):
            raise value
        return value

    def faces(self, fps: float, max_frames: int, detector: FaceDetector
              ) -> list[tuple[np.ndarray, Box | None]]:
        """(grey frame, largest face or None) per sampled frame. Raises MediaError."""
        key = (fps, max_frames, detector.name)
        if key not in self._faces:
            frames, _ = self.frames(fps, max_frames)
            self._faces[key] = detect_faces(frames, detector)
        return self._faces[key]

    def audio(self) -> np.ndarray:
        """16 kHz mono float32 from the wav if there is one, else from the video, at most
        MAX_AUDIO_SECONDS (`audio_capped` says whether the file was longer). Raises MediaError."""
        if self._audio is None:
            try:
                if not self.clip.has_audio:
                    raise MediaError("the clip has no usable audio stream")
                self._audio = self._load_audio()
            except MediaError as exc:
                self._audio = exc
        if isinstance(self._audio, MediaError):
            raise self._audio
        return self._audio

    def _load_audio(self) -> np.ndarray:
        errors = []
        for path in (self.clip.audio_path, self.clip.video_path):
            if not path:
                continue
            try:
                return load_audio(path)
            except MediaError as exc:
                errors.append(str(exc))
        raise MediaError("; ".join(errors) or "no audio file")

    @property
    def audio_capped(self) -> bool:
        """Whether the audio was cut at MAX_AUDIO_SECONDS (only the first part is used)."""
        limit = int(MAX_AUDIO_SECONDS * SAMPLE_RATE)
        return isinstance(self._audio, np.ndarray) and len(self._audio) >= limit

    def _shrink(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        scale = self.max_side / max(h, w)
        if scale >= 1:
            return frame
        return cv2.resize(frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
