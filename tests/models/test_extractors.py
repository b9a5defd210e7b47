"""Feature extractors: shapes, missing modalities, and every encoder path (tiny HF models)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.encoders import FERClassifier, HFImageEncoder, HogEncoder
from models.extractors import DEFAULT_SET, EXTRACTORS, ClipInput, build
from models.extractors.au import AU_FEATURES, geometry
from models.extractors.base import stats_pool
from models.extractors.clip_media import ClipMedia
from models.faces import default_landmark_model
from storage.ingest import build_registry, media_paths, probe_with_cache, scan
from storage.labels import MER2025_LABELS
from tasks.features import clip_inputs
from tests.conftest import shared_path
from tests.models import tiny_hf


@pytest.fixture(scope="module")
def clips(synthetic_corpus) -> list[ClipInput]:
    scanned = scan(synthetic_corpus, MER2025_LABELS)
    probes, _ = probe_with_cache(media_paths(scanned), None)
    return clip_inputs(build_registry(scanned, "t", probes))[:6]


def run(extractor, clips):
    extractor.setup()
    media = {c.clip_id: ClipMedia(c) for c in clips}
    return extractor.extract(clips, media)


@pytest.mark.parametrize("name", DEFAULT_SET)
def test_default_extractors_give_one_finite_row_per_clip(name, clips):
    rows = run(build(name), clips)
    assert [r.clip_id for r in rows] == [c.clip_id for c in clips]
    ok = [r for r in rows if r.status == "ok"]
    assert len(ok) >= len(clips) - 1, [r.reason for r in rows]        # a cartoon face may be missed
    dims = {r.vector.shape for r in ok}
    assert len(dims) == 1 and all(np.isfinite(r.vector).all() for r in ok)
    assert all(r.vector.dtype == np.float32 for r in ok)


def test_expected_dimensions(clips):
    dims = {name: run(build(name), clips[:2])[0] for name in ("au", "audio_egemaps", "text",
                                                              "audio_handcrafted")}
    assert dims["au"].vector.shape == (5 * len(AU_FEATURES),)
    assert dims["au"].sequence.shape[1] == len(AU_FEATURES)
    assert dims["audio_egemaps"].vector.shape == (88,)
    assert dims["text"].vector.shape == (384,) and dims["text"].sequence.shape[1] == 384
    assert np.linalg.norm(dims["text"].vector) == pytest.approx(1.0, abs=1e-5)
    seq = dims["audio_handcrafted"].sequence
    assert seq.shape[1] == (40 + 40 + 64 + 2) and 15 <= seq.shape[0] <= 31   # 1.5-3 s at 10 Hz


def test_missing_modalities_are_missing_with_a_reason(clips):
    c = clips[0]
    bare = ClipInput(c.clip_id, video_path=c.video_path, has_video=False, has_audio=False,
                     has_text=False, video_sha256=c.video_sha256)
    for name, words in [("audio_handcrafted", "no usable audio"), ("audio_egemaps", "no usable audio"),
                        ("text", "no transcript"), ("visual_face", "no usable video"),
                        ("visual_global", "no usable video"), ("au", "no usable video")]:
        row = run(build(name), [bare])[0]
        assert row.status == "missing" and words in row.reason and row.vector is None, name


def test_clip_without_a_face_is_missing(tmp_path, clips):
    from storage.synthetic import write_mp4

    write_mp4(tmp_path / "blank.mp4", [np.full((128, 128, 3), 128, np.uint8)] * 10, None)
    clip = ClipInput("blank", video_path=str(tmp_path / "blank.mp4"), has_video=True)
    for name in ("visual_face", "au"):
        row = run(build(name), [clip])[0]
        assert row.status == "missing" and "no face found in" in row.reason
    assert run(build("visual_global"), [clip])[0].status == "ok"


def test_unknown_extractor_and_parameter_are_clear_errors():
    with pytest.raises(ValueError, match="unknown extractor 'nope'"):
        build("nope")
    with pytest.raises(ValueError, match="extractor text: .*unexpected keyword argument 'size'"):
        build("text", {"size": 3})
    with pytest.raises(ValueError, match="unknown image encoder"):
        build("visual_global", {"encoder": "magic"}).setup()


def test_extractor_key_changes_with_parameters_not_device():
    a, b = build("visual_face"), build("visual_face", {"fps": 4.0})
    assert a.key != b.key and a.key.startswith("visual_face-v2-")
    assert build("visual_face", {"device": "cuda"}).key == a.key


def test_geometry_tracks_the_mouth():
    rng = np.random.default_rng(0)
    face = np.zeros((68, 2), np.float32)
    face[:, 0], face[:, 1] = rng.uniform(30, 70, 68), rng.uniform(30, 70, 68)
    face[36:42], face[42:48] = [40, 40], [60, 40]               # eyes 20 px apart
    face[62], face[66] = [50, 60], [50, 61]                     # inner lips nearly closed
    closed = geometry(face)
    face2 = face.copy()
    face2[66] = [50, 71]
    opened = geometry(face2)
    i = AU_FEATURES.index("lips_part")
    assert opened[i] > closed[i]
    assert np.allclose(np.delete(opened, i), np.delete(closed, i))
    assert np.allclose(geometry(face * 2), geometry(face), atol=1e-5)   # scale-free


def test_stats_pool():
    seq = np.array([[0, 1], [2, 3], [4, 5]], np.float32)
    out = stats_pool(seq)
    assert out.tolist() == [2, 3, *seq.std(0).tolist(), 0, 1, 4, 5, 2, 2]


def test_hog_encoder_shape():
    enc = HogEncoder()
    assert enc([np.zeros((50, 70), np.uint8)] * 2).shape == (2, enc.dim)


def test_hf_image_encoders_from_a_local_path(tmp_path):
    frames = [np.random.default_rng(i).integers(0, 255, (40, 60, 3), dtype=np.uint8) for i in range(3)]
    vit = HFImageEncoder(tiny_hf.tiny_vit(tmp_path / "vit"))
    assert vit(frames).shape == (3, 32)
    clip = HFImageEncoder(tiny_hf.tiny_clip(tmp_path / "clip"))
    assert clip(frames).shape == (3, 16)                            # the projection


def test_hf_encoders_inside_extractors(tmp_path, clips):
    vit = tiny_hf.tiny_vit(tmp_path / "vit")
    rows = run(build("visual_global", {"encoder": f"hf:{vit}"}), clips[:2])
    assert rows[0].vector.shape == (32,)
    rows = run(build("visual_face", {"encoder": f"hf:{vit}"}), clips[:2])
    assert {r.vector.shape for r in rows if r.status == "ok"} == {(32,)}
    w2v = tiny_hf.tiny_wav2vec2(tmp_path / "w2v")
    rows = run(build("audio_hf", {"model": w2v, "layers": 2}), clips[:2])
    assert rows[0].vector.shape == (32,) and rows[0].sequence.shape[1] == 32
    bert = tiny_hf.tiny_bert(tmp_path / "bert")
    rows = run(build("text", {"model": bert}), clips[:2])
    assert rows[0].vector.shape == (32,) and rows[0].sequence.shape[1] == 32


def test_fer_classifier_onnx(tmp_path):
    import torch

    class Tiny(torch.nn.Module):
        def forward(self, x):                                       # (1, 64, 64, 1) -> (1, 7)
            return torch.softmax(x.mean(dim=(1, 2)).repeat(1, 7) * torch.arange(7.0), dim=1)

    path = tmp_path / "fer.onnx"
    torch.onnx.export(Tiny(), (torch.zeros(1, 64, 64, 1),), str(path), input_names=["x"],
                      dynamo=False)
    probs = FERClassifier(path)([np.full((30, 30), 200, np.uint8), np.zeros((64, 64), np.uint8)])
    assert probs.shape == (2, 7) and np.allclose(probs.sum(1), 1, atol=1e-5)
    # Input scaled to [-1, 1]: bright faces score high on the last class, black ones on the first.
    assert probs[0].argmax() == 6 and probs[1].argmax() == 0


def test_fer_classifier_tflite_on_a_real_face():
    model = shared_path("data", "models", "fer_emotion.tflite")
    import cv2

    faces = pd.read_csv(shared_path("data", "fer2013", "teacher_scores.csv")).head(3)
    grays = [cv2.imread(str(shared_path("data", "fer2013", f)), cv2.IMREAD_GRAYSCALE) for f in faces["file"]]
    probs = FERClassifier(model)(grays)
    assert probs.shape == (3, 7) and np.allclose(probs.sum(1), 1, atol=1e-3)
    # The README's scores were computed with bilinear 48->64 and the same scaling.
    expected = faces[["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]].to_numpy()
    assert np.abs(probs - expected).max() < 0.02


def test_fer_model_path_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="face-expression model"):
        FERClassifier(tmp_path / "none.tflite")
    (tmp_path / "m.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="must be .tflite or .onnx"):
        FERClassifier(tmp_path / "m.bin")


def test_landmark_model_ships_offline():
    assert default_landmark_model() is not None


def test_every_extractor_is_registered():
    assert set(DEFAULT_SET) <= set(EXTRACTORS)


def test_asr_fills_in_a_missing_transcript(tmp_path, clips):
    whisper = tiny_hf.tiny_whisper(tmp_path / "whisper")
    c = clips[0]
    silent_text = ClipInput(c.clip_id, video_path=c.video_path, audio_path=c.audio_path,
                            has_video=True, has_audio=True, has_text=False,
                            video_sha256=c.video_sha256, audio_sha256=c.audio_sha256)
    with_text = clips[1]
    rows = run(build("text", {"asr_model": whisper}), [silent_text, with_text])
    assert rows[0].status == "ok" and rows[0].extra["transcript"]        # random weights: noise
    assert rows[0].vector.shape == (384,)
    assert rows[1].status == "ok" and "transcript" not in rows[1].extra  # subtitles win
    # The ASR model is part of the key: its transcripts are not mixed with another's.
    assert build("text", {"asr_model": whisper}).key != build("text").key


def test_detector_chain_falls_back_per_frame():
    from models.faces import ChainDetector, make_detector

    class Never:
        name = "never"

        def detect(self, gray):
            return []

    class Always:
        name = "always"

        def detect(self, gray):
            return [(1, 2, 3, 4)]

    assert ChainDetector([Never(), Always()]).detect(np.zeros((8, 8), np.uint8)) == [(1, 2, 3, 4)]
    assert ChainDetector([Never(), Never()]).detect(np.zeros((8, 8), np.uint8)) == []
    assert make_detector("haar,dlib").name == "haar,dlib"
    assert make_detector("dlib").name == "dlib"
    with pytest.raises(ValueError, match="unknown face detector 'haar,mtcnn'"):
        make_detector("haar,mtcnn")


def test_librosas_gufuncs_are_first_run_under_a_machine_wide_lock_once_per_process(monkeypatch, tmp_path):
    # numba writes a gufunc's two cache files separately: processes compiling at once can leave a
    # mixed pair that segfaults on every later load (numba/numba#10128). The first run is locked.
    import fcntl
    import os

    from models.extractors import audio

    monkeypatch.setattr(audio, "NUMBA_WARM_LOCK", str(tmp_path / "warm.lock"))
    monkeypatch.setattr(audio, "_warmed", False)
    runs = []

    def features(clip_id, y):
        fd = os.open(audio.NUMBA_WARM_LOCK, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):                 # another process would wait
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        runs.append((clip_id, y.dtype, len(y)))

    audio.warm_numba_cache(features)
    audio.warm_numba_cache(features)
    assert runs == [("numba-warm-up", np.float32, audio.SAMPLE_RATE)]
    fd = os.open(audio.NUMBA_WARM_LOCK, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)            # released afterwards
    finally:
        os.close(fd)
