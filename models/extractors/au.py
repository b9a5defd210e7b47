"""Facial action units over time, as landmark geometry (the MoE paper's AU expert).

Per sampled frame with a face, dlib's 68 landmarks give a vector of facial measurements,
normalised by the inter-ocular distance so that face size and distance cancel out:

| feature | landmarks (0-based, iBUG 68) | closest OpenFace AU |
|---|---|---|
| inner_brow_raise | inner brow ends 21/22 above the eye tops 38/43 | AU01 |
| outer_brow_raise | outer brow ends 17/26 above the eye corners 36/45 | AU02 |
| brow_gap | distance between inner brow ends 21-22 | AU04 (brows drawn together) |
| eye_open_l, eye_open_r | eye aspect ratio (lid gap / eye width) | AU05 up, AU07/AU43 down |
| cheek_raise | lower lids 41/46 relative to eye corners | AU06 |
| nose_wrinkle | nose bridge 27 to nose tip 33 | AU09 (shortens) |
| lip_corner_pull | corners 48/54 above the lip centre line | AU12 (+) / AU15 (-) |
| mouth_width | corner to corner 48-54 | AU20 stretch, AU12 |
| lips_part | inner lip gap 62-66 | AU25 |
| jaw_drop | chin 8 to nose tip 33 | AU26 |
| chin_raise | lower lip 57 to chin 8 | AU17 (shortens) |
| upper_lip_raise | upper lip 51 to nose tip 33 | AU10 (shortens) |

These are geometric proxies, not OpenFace's AU intensities: OpenFace regresses AU intensity
from appearance (HOG) plus shape with models trained on FACS-coded data, which also sees
texture-only AUs (wrinkles, dimples). Geometry alone cannot, but it needs no trained AU model,
runs offline, and keeps the temporal shape of an expression. Frames without a face are dropped
from the sequence; the clip-level vector is mean, std, min, max and mean |delta| of each
feature over the remaining frames. A clip with no face in any frame is `missing`.
"""

from __future__ import annotations

import numpy as np

from models.extractors.base import FeatureRow, stats_pool
from models.extractors.visual import FaceExtractor
from models.faces import DEFAULT_DETECTOR, Landmarker, make_detector

AU_FEATURES = ("inner_brow_raise", "outer_brow_raise", "brow_gap", "eye_open_l", "eye_open_r",
               "cheek_raise", "nose_wrinkle", "lip_corner_pull", "mouth_width", "lips_part",
               "jaw_drop", "chin_raise", "upper_lip_raise")


def _eye_open(p: np.ndarray, idx: tuple[int, ...]) -> float:
    a, b, c, d, e, f = (p[i] for i in idx)
    return float((np.linalg.norm(b - f) + np.linalg.norm(c - e)) / (2 * np.linalg.norm(a - d) + 1e-6))


def geometry(p: np.ndarray) -> np.ndarray:
    """AU geometry (len(AU_FEATURES),) of one face from its (68, 2) landmarks (y grows downward)."""
    left_eye, right_eye = p[36:42].mean(0), p[42:48].mean(0)
    iod = float(np.linalg.norm(right_eye - left_eye)) + 1e-6
    lip_centre_y = (p[51, 1] + p[57, 1]) / 2
    feats = [
        ((p[38, 1] - p[21, 1]) + (p[43, 1] - p[22, 1])) / 2,
        ((p[36, 1] - p[17, 1]) + (p[45, 1] - p[26, 1])) / 2,
        np.linalg.norm(p[21] - p[22]),
        _eye_open(p, (36, 37, 38, 39, 40, 41)) * iod,
        _eye_open(p, (42, 43, 44, 45, 46, 47)) * iod,
        ((p[41, 1] - p[36, 1]) + (p[46, 1] - p[45, 1])) / 2,
        np.linalg.norm(p[27] - p[33]),
        lip_centre_y - (p[48, 1] + p[54, 1]) / 2,
        np.linalg.norm(p[48] - p[54]),
        np.linalg.norm(p[62] - p[66]),
        np.linalg.norm(p[8] - p[33]),
        np.linalg.norm(p[57] - p[8]),
        np.linalg.norm(p[51] - p[33]),
    ]
    return (np.asarray(feats, dtype=np.float32) / iod).astype(np.float32)


class FacialGeometry(FaceExtractor):
    name = "au"
    version = 2          # v2: Haar at scale 1.05 / 3 neighbours, dlib fallback

    def __init__(self, detector: str = DEFAULT_DETECTOR, fps: float = 2.0, max_frames: int = 32,
                 landmark_model: str | None = None):
        self.detector, self.fps, self.max_frames = detector, fps, max_frames
        self.landmark_model = landmark_model

    def setup(self) -> None:
        self.detector_ = make_detector(self.detector)
        self.landmarker_ = Landmarker(self.landmark_model)

    def from_faces(self, clip_id: str, faces: list) -> FeatureRow:
        seq = np.stack([geometry(self.landmarker_(gray, box)) for gray, box in faces])   # (T, 13)
        return FeatureRow(clip_id, vector=stats_pool(seq), sequence=seq)
