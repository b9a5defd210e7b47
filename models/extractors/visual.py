"""Visual features, two branches (ECMF): the whole frame and the face.

- `visual_global`: frames sampled at `fps`, each encoded, mean-pooled over time.
- `visual_face`: the largest face per sampled frame (detector pluggable), cropped and encoded,
  mean-pooled over the frames that have a face; a clip with no face is `missing`.

Encoders: "hog" (no weights; the default), "fer:<path.tflite|path.onnx>" (faces only: a
face-expression classifier, pooled as the log of the mean probabilities, with the per-frame
probabilities kept as the sequence), or "hf:<name or path>" (a Hugging Face image model).
"""

from __future__ import annotations

import numpy as np

from models.encoders import FERClassifier, HFImageEncoder, HogEncoder
from models.extractors.base import ClipInput, Extractor, FeatureRow
from models.extractors.clip_media import ClipMedia
from models.faces import DEFAULT_DETECTOR, crop, make_detector
from models.media import MediaError


def make_encoder(spec: str, device: str = "cpu"):
    kind, _, arg = spec.partition(":")
    if kind == "hog":
        return HogEncoder(size=int(arg) if arg else 64)
    if kind == "fer":
        return FERClassifier(arg)
    if kind == "hf":
        return HFImageEncoder(arg, device=device)
    raise ValueError(f"unknown image encoder {spec!r}: use hog, fer:<model file> or hf:<name or path>")


class VisualGlobal(Extractor):
    name = "visual_global"
    modality = "visual"

    def __init__(self, encoder: str = "hog", fps: float = 2.0, max_frames: int = 32, device: str = "cpu"):
        self.encoder, self.fps, self.max_frames, self.device = encoder, fps, max_frames, device
        if encoder.startswith("fer:"):
            raise ValueError("a face-expression classifier encodes faces: use it in visual_face")

    def params(self) -> dict:
        return {"encoder": self.encoder, "fps": self.fps, "max_frames": self.max_frames}

    def setup(self) -> None:
        self.encoder_ = make_encoder(self.encoder, self.device)

    def extract(self, clips: list[ClipInput], media: dict[str, ClipMedia]) -> list[FeatureRow]:
        rows = []
        for clip in clips:
            try:
                frames, _ = media[clip.clip_id].frames(self.fps, self.max_frames)
            except MediaError as exc:
                rows.append(FeatureRow.missing(clip.clip_id, str(exc)))
                continue
            if isinstance(self.encoder_, HogEncoder):
                grays = [np.dot(f[..., :3], [0.299, 0.587, 0.114]).astype(np.uint8) for f in frames]
                per_frame = self.encoder_(grays)
            else:
                per_frame = self.encoder_(frames)
            rows.append(FeatureRow(clip.clip_id, vector=per_frame.mean(0)))
        return rows


class FaceExtractor(Extractor):
    """Base of the extractors that read the largest face of each sampled frame."""

    modality = "visual"
    detector: str
    fps: float
    max_frames: int

    def extract(self, clips: list[ClipInput], media: dict[str, ClipMedia]) -> list[FeatureRow]:
        rows = []
        for clip in clips:
            try:
                faces = media[clip.clip_id].faces(self.fps, self.max_frames, self.detector_)
            except MediaError as exc:
                rows.append(FeatureRow.missing(clip.clip_id, str(exc)))
                continue
            found = [(gray, box) for gray, box in faces if box is not None]
            if not found:
                rows.append(FeatureRow.missing(
                    clip.clip_id, f"no face found in {len(faces)} sampled frames ({self.detector} detector)"))
                continue
            row = self.from_faces(clip.clip_id, found)
            row.extra |= {"face_frames": len(found), "frames": len(faces)}
            rows.append(row)
        return rows

    def from_faces(self, clip_id: str, faces: list) -> FeatureRow:
        """The row of a clip from its (grey frame, face box) pairs, at least one."""
        raise NotImplementedError


class VisualFace(FaceExtractor):
    name = "visual_face"
    version = 2          # v2: Haar at scale 1.05 / 3 neighbours, dlib fallback

    def __init__(self, encoder: str = "hog", detector: str = DEFAULT_DETECTOR, fps: float = 2.0,
                 max_frames: int = 32, crop_size: int = 64, device: str = "cpu"):
        self.encoder, self.detector, self.fps = encoder, detector, fps
        self.max_frames, self.crop_size, self.device = max_frames, crop_size, device

    def params(self) -> dict:
        return {"encoder": self.encoder, "detector": self.detector, "fps": self.fps,
                "max_frames": self.max_frames, "crop_size": self.crop_size}

    def setup(self) -> None:
        self.encoder_ = make_encoder(self.encoder, self.device)
        self.detector_ = make_detector(self.detector)

    def from_faces(self, clip_id: str, faces: list) -> FeatureRow:
        crops = [crop(gray, box, self.crop_size) for gray, box in faces]
        if isinstance(self.encoder_, FERClassifier):
            probs = self.encoder_(crops)                                   # (T, 7)
            vector = np.log(probs.mean(0) + 1e-6)
            return FeatureRow(clip_id, vector=vector.astype(np.float32), sequence=probs)
        if isinstance(self.encoder_, HogEncoder):
            per_face = self.encoder_(crops)
        else:
            per_face = self.encoder_([np.repeat(c[..., None], 3, axis=2) for c in crops])
        return FeatureRow(clip_id, vector=per_face.mean(0))
