"""Ingest of the real data in ../shared (skipped when it is absent)."""

from __future__ import annotations

import subprocess
import sys

import av
import pytest

from storage import ingest
from storage.labels import MER2025_LABELS
from tests.conftest import shared_path

pytestmark = pytest.mark.shared_data


def decoded_video_duration(path: str) -> tuple[float, int]:
    """Duration measured by decoding every frame: last start - first start + one frame."""
    with av.open(path) as c:
        stream = c.streams.video[0]
        times = [f.time for f in c.decode(stream) if f.time is not None]
        fps = float(stream.average_rate)
    return max(times) - min(times) + 1 / fps, len(times)


def test_real_mer2023_clips_durations_and_stream_flags():
    folder = shared_path("data", "mer2023_examples")
    scanned = ingest.scan(folder, MER2025_LABELS)
    probes, _ = ingest.probe_with_cache(ingest.media_paths(scanned), None, jobs=2)
    reg = ingest.build_registry(scanned, "mer2023", probes).set_index("name")
    assert scanned.layout == "folder" and len(reg) == 16
    assert (reg["status"] == "ok").all(), reg["reason"].dropna().to_dict()
    assert reg["has_video"].all() and reg["has_audio"].all()
    assert not reg["has_text"].any()                    # subtitles are burned in, not given
    assert reg.loc[["sample_00000167", "sample_00000338", "sample_00000669", "sample_00000727"],
                   "label"].tolist() == ["happy", "sad", "angry", "surprise"]
    assert (reg["split"] == "train").sum() == 4
    for name, row in reg.iterrows():
        truth, frames = decoded_video_duration(row["video_path"])
        assert frames > 10
        assert row["duration_s"] == pytest.approx(truth, abs=1.5 / row["fps"]), name
    # The README's range: 1.7-13.6 s.
    assert reg["duration_s"].min() == pytest.approx(1.7, abs=0.05)
    assert reg["duration_s"].max() == pytest.approx(13.6, abs=0.05)
    assert set(reg["audio_sample_rate"]) == {44100, 48000}


@pytest.mark.slow
def test_small_composite_build_registers_every_clip(tmp_path):
    script = shared_path("bench", "build_composite.py")
    out = tmp_path / "composite"
    subprocess.run([sys.executable, str(script), "--out", str(out), "--labeled", "30",
                    "--unlabeled", "60", "--test", "30", "--jobs", "2"],
                   check=True, capture_output=True, timeout=600)
    scanned = ingest.scan(out, MER2025_LABELS)
    probes, _ = ingest.probe_with_cache(ingest.media_paths(scanned), None, jobs=2)
    reg = ingest.build_registry(scanned, "composite", probes)
    summary = ingest.summarize(reg)
    assert summary["registered"] == 120 and summary["ok"] == 120
    assert summary["by_split"] == {"candidate": 90, "train": 30}
    assert reg["has_video"].all() and reg["has_audio"].all() and reg["has_text"].all()
    assert reg["duration_s"].between(1.9, 2.1).all()


@pytest.mark.slow
def test_default_extractors_on_the_real_mer2023_clips(tmp_path):
    from storage.artifacts import ArtifactStore
    from storage.feature_cache import FeatureCache
    from tasks.features import ShardRunner, assemble_features, clip_inputs, default_specs, plan_shards

    folder = shared_path("data", "mer2023_examples")
    scanned = ingest.scan(folder, MER2025_LABELS)
    probes, _ = ingest.probe_with_cache(ingest.media_paths(scanned), None, jobs=2)
    registry = ingest.build_registry(scanned, "mer2023", probes)
    specs = default_specs()
    jobs, _ = plan_shards(clip_inputs(registry), specs, FeatureCache(tmp_path), shard_size=8)
    with ShardRunner(2) as runner:
        for job in jobs:
            runner.run(job, str(tmp_path))
    counts = {s.name: assemble_features(registry, s, str(tmp_path), ArtifactStore(tmp_path / "a"),
                                        "r").counts for s in specs}
    for name in ("visual_global", "audio_handcrafted", "audio_egemaps"):
        assert counts[name] == {"clips": 16, "ok": 16}, name
    assert counts["text"] == {"clips": 16, "missing": 16}      # burned-in subtitles only
    for name in ("visual_face", "au"):                          # real faces, found in most clips
        assert counts[name].get("ok", 0) >= 12 and counts[name].get("error", 0) == 0, counts[name]
