"""A small SYNTHETIC corpus in MER2025 layout, for `mersemi demo` and the tests.

Nothing here is real data: faces are cartoons drawn with OpenCV (brows and mouth shaped by
the label), audio is a buzzy harmonic voice whose pitch, loudness and tremolo depend on the
label, and subtitles come from a handful of templates. It exists so that the pipeline can be
run end to end on a machine with no dataset; it says nothing about accuracy on real clips.

Output: video/<name>.mp4 (H.264 + AAC), audio/<name>.wav (16 kHz mono), subtitle_chieng.csv,
track1_train_disdim.csv, track_all_candidates.csv, answers/candidates_truth.csv (the true
labels of the candidates, for scoring only), teacher/answers.jsonl (a simulated teacher, right
about 75 % of the time, in the replay format) and README.txt.
"""

from __future__ import annotations

import csv
import json
import wave
from collections.abc import Sequence
from pathlib import Path

import av
import cv2
import numpy as np

from storage.labels import MER2025_LABELS

FPS = 10
SIZE = 128
SAMPLE_RATE = 16000

# Per label: brow tilt (+ = inner ends down, angry), mouth curve (+ = smile), mouth opening,
# voice pitch (Hz), loudness, pitch slope (Hz/s) and tremolo depth.
STYLE = {
    "neutral": dict(brow=0.0, curve=0.0, open=0.05, f0=140, gain=0.25, slope=0, trem=0.0),
    "angry": dict(brow=0.5, curve=-0.2, open=0.15, f0=190, gain=0.55, slope=-10, trem=0.0),
    "happy": dict(brow=-0.1, curve=0.8, open=0.25, f0=230, gain=0.4, slope=20, trem=0.0),
    "sad": dict(brow=-0.4, curve=-0.7, open=0.05, f0=110, gain=0.15, slope=-15, trem=0.0),
    "worried": dict(brow=-0.6, curve=-0.2, open=0.1, f0=200, gain=0.25, slope=0, trem=0.5),
    "surprise": dict(brow=-0.2, curve=0.0, open=0.7, f0=260, gain=0.45, slope=60, trem=0.0),
}
TEMPLATES = {
    "neutral": ["The meeting is at three.", "I put the box on the table.", "We take the bus home."],
    "angry": ["Get out of my room now!", "I told you to stop that!", "This is completely unfair!"],
    "happy": ["That's wonderful news!", "I love this so much!", "We won, we actually won!"],
    "sad": ["I miss her every day.", "Nothing will be the same.", "I lost everything."],
    "worried": ["What if they don't come back?", "I'm scared it will go wrong.",
                "Are you sure it's safe?"],
    "surprise": ["Wait, you did what?", "No way, really?", "I can't believe it's you!"],
}


def draw_face(label: str, t: float, rng: np.random.Generator) -> np.ndarray:
    """One RGB frame (SIZE x SIZE) of a cartoon face showing `label` at time t."""
    s = STYLE[label]
    img = np.full((SIZE, SIZE, 3), rng.integers(90, 160), np.uint8)
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    cx, cy = SIZE // 2 + int(rng.integers(-3, 4)), SIZE // 2 + int(rng.integers(-3, 4))
    cv2.ellipse(img, (cx, cy), (38, 48), 0, 0, 360, (224, 186, 150), -1)
    for side in (-1, 1):
        ex = cx + side * 15
        cv2.circle(img, (ex, cy - 10), 5, (255, 255, 255), -1)
        cv2.circle(img, (ex, cy - 10), 2, (30, 30, 30), -1)
        inner_dy = int(8 * s["brow"])
        cv2.line(img, (ex - side * 8, cy - 22 - inner_dy), (ex + side * 8, cy - 22 + inner_dy),
                 (60, 40, 30), 2)
    talk = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)
    mouth_h = max(1, int(2 + 14 * s["open"] * (0.6 + 0.4 * talk)))
    curve = int(10 * s["curve"])
    if s["open"] > 0.5:
        cv2.ellipse(img, (cx, cy + 22), (9, mouth_h), 0, 0, 360, (90, 20, 30), -1)
    else:
        pts = np.array([[cx - 14, cy + 22 - curve], [cx, cy + 22 + curve + mouth_h // 2],
                        [cx + 14, cy + 22 - curve]], np.int32)
        cv2.polylines(img, [pts], False, (120, 30, 40), 3)
    return img


def voice(label: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Speech-like audio: harmonics of a moving pitch, syllable envelope, breath noise."""
    s = STYLE[label]
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    f0 = s["f0"] * rng.uniform(0.92, 1.08) + s["slope"] * t
    f0 = f0 * (1 + s["trem"] * 0.04 * np.sin(2 * np.pi * 6 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    x = sum(np.sin(k * phase) / k for k in range(1, 8))
    syllables = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6)), 0, None)
    x = x * syllables ** 0.7 * s["gain"] + rng.normal(0, 0.01, n)
    return np.clip(x / 2.5, -1, 1).astype(np.float32)


def write_wav(path: Path, x: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((x * 32767).astype("<i2").tobytes())


def write_mp4(path: Path, frames: Sequence[np.ndarray], x: np.ndarray | None) -> None:
    """H.264 video at FPS, plus an AAC track when `x` is given."""
    with av.open(str(path), "w", format="mp4") as c:
        vs = c.add_stream("libx264", rate=FPS)
        vs.width = vs.height = SIZE
        vs.pix_fmt = "yuv420p"
        vs.codec_context.thread_count = 1
        vs.options = {"crf": "23", "preset": "veryfast"}
        aus = None
        if x is not None:
            aus = c.add_stream("aac", rate=SAMPLE_RATE)
            aus.codec_context.layout = "mono"
        for frame in frames:
            c.mux(vs.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        c.mux(vs.encode())
        if aus is not None:
            for start in range(0, len(x), 1024):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[None, start:start + 1024]),
                                                format="fltp", layout="mono")
                af.sample_rate = SAMPLE_RATE
                af.pts = start
                c.mux(aus.encode(af))
            c.mux(aus.encode())


def make_corpus(out: str | Path, per_label_train: int = 4, per_label_candidates: int = 4,
                labels: Sequence[str] = MER2025_LABELS, seed: int = 0) -> dict:
    """Write the synthetic corpus to `out`; returns counts. Deterministic for a seed."""
    out = Path(out)
    for sub in ("video", "audio", "answers", "teacher"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    plan = [(lab, "train") for lab in labels for _ in range(per_label_train)]
    plan += [(lab, "candidate") for lab in labels for _ in range(per_label_candidates)]
    order = rng.permutation(len(plan))
    rows = []
    for i, idx in enumerate(order, start=1):
        label, split = plan[idx]
        name = f"synth_{i:05d}"
        seconds = float(rng.uniform(1.5, 3.0))
        frames = [draw_face(label, k / FPS, rng) for k in range(int(seconds * FPS))]
        x = voice(label, seconds, rng)
        write_mp4(out / "video" / f"{name}.mp4", frames, x)
        write_wav(out / "audio" / f"{name}.wav", x)
        text = TEMPLATES[label][int(rng.integers(len(TEMPLATES[label])))]
        rows.append((name, label, split, text))
    _write_csv(out / "subtitle_chieng.csv", ["name", "chinese", "english"],
               [(n, "", text) for n, _, _, text in rows])
    _write_csv(out / "track1_train_disdim.csv", ["name", "discrete", "valence"],
               [(n, lab, "") for n, lab, split, _ in rows if split == "train"])
    _write_csv(out / "track_all_candidates.csv", ["name"],
               [(n,) for n, _, split, _ in rows if split == "candidate"])
    _write_csv(out / "answers" / "candidates_truth.csv", ["name", "discrete"],
               [(n, lab) for n, lab, split, _ in rows if split == "candidate"])
    with open(out / "teacher" / "answers.jsonl", "w", encoding="utf-8") as f:
        for name, label, split, _ in rows:
            if split == "candidate":
                f.write(json.dumps(simulated_answer(name, label, labels, rng)) + "\n")
    (out / "README.txt").write_text(
        "SYNTHETIC corpus generated by `mersemi demo` (storage/synthetic.py): cartoon faces,\n"
        "buzzy synthetic voices and template subtitles. Not real data; results on it say\n"
        "nothing about real emotion recognition. answers/ holds the true candidate labels\n"
        "for scoring only; teacher/answers.jsonl is a simulated teacher, not a model.\n",
        encoding="utf-8")
    return {"clips": len(rows), "train": sum(r[2] == "train" for r in rows),
            "candidate": sum(r[2] == "candidate" for r in rows), "labels": list(labels)}


def simulated_answer(name: str, label: str, labels: Sequence[str], rng: np.random.Generator,
                     accuracy: float = 0.75) -> dict:
    """A replay-format teacher answer: the true label with probability `accuracy`."""
    said = label if rng.random() < accuracy else str(rng.choice([x for x in labels if x != label]))
    logits = rng.normal(0, 1, len(labels)) + 3.0 * (np.array(labels) == said)
    scores = np.exp(logits) / np.exp(logits).sum()
    return {"name": name, "model": "synthetic-teacher", "label": said,
            "scores": {lab: round(float(p), 6) for lab, p in zip(labels, scores, strict=True)},
            "reasoning": "simulated teacher of the synthetic demo corpus"}


def _write_csv(path: Path, header: list[str], rows: list[tuple]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
