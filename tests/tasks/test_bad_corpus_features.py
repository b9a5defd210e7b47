"""Features over the ingested bad-input corpus (tests/bad_corpus.py), through the task-layer
functions with one worker: every usable clip gets one row per default extractor with the
status this table expects and a reason; nothing raises; the 3-hour clip costs what a short
one does (frames reached by seeking, audio read for its first minute only)."""

from __future__ import annotations

import time
import tracemalloc

import pandas as pd
import pytest

from models.extractors import DEFAULT_SET, ClipInput
from models.extractors.clip_media import ClipMedia
from models.media import MAX_AUDIO_SECONDS, SAMPLE_RATE
from storage import ingest
from storage.artifacts import ArtifactStore
from storage.feature_cache import FeatureCache
from storage.labels import MER2025_LABELS
from tasks.features import assemble_features, default_specs, extract_shard, plan_features
from tests.bad_corpus import CLIPS, THREE_HOURS_S, build_bad_corpus

pytestmark = pytest.mark.slow

NO_VIDEO = "the clip has no usable video stream"
NO_FACE = "no face found in 32 sampled frames (haar,dlib detector)"
NO_AUDIO = "the clip has no usable audio stream"
NO_TEXT = "no transcript, and no ASR model is configured"
VISUAL = ("visual_global", "visual_face", "au")
FACES = ("visual_face", "au")
AUDIO = ("audio_handcrafted", "audio_egemaps")
# Clips that ingest marks `error` get no feature row at all.
UNUSABLE = ("dup_conflict", "label_unknown", "label_empty", "junk_only")
# name -> {extractor: (status, reason)} where not ok; every other usable clip is ok everywhere.
NOT_OK = {
    **{name: dict.fromkeys(VISUAL, ("missing", NO_VIDEO))
       for name in ("trunc_moov", "trunc_faststart", "random_bytes", "zero_frames")},
    "three_hours": dict.fromkeys(FACES, ("missing", NO_FACE)),     # grey 16x16 frames
    "no_audio": dict.fromkeys(AUDIO, ("missing", NO_AUDIO)),
    **{name: {"text": ("missing", NO_TEXT)}
       for name in ("sub_gbk", "sub_cp1252", "sub_empty", "sub_missing")},
}


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """The corpus ingested, planned, extracted shard by shard in this process, and assembled."""
    work = tmp_path_factory.mktemp("bad-features")
    root = build_bad_corpus(work / "corpus")
    scanned = ingest.scan(root, MER2025_LABELS)
    probes, _ = ingest.probe_with_cache(ingest.media_paths(scanned), None)
    ingest.build_registry(scanned, "bad", probes).to_parquet(work / "clips.parquet")
    specs, cache = default_specs(), FeatureCache(work / "cache")
    registry, jobs, cached = plan_features(work / "clips.parquet", specs, cache, shard_size=8)
    assert cached == dict.fromkeys(DEFAULT_SET, 0)
    summaries = [extract_shard(job, str(cache.root)) for job in jobs]
    store = ArtifactStore(work / "artifacts")
    sets = {s.name: assemble_features(registry, s, str(cache.root), store, "r1") for s in specs}
    names = registry.set_index("clip_id")["name"]
    frames = {}
    for name, fs in sets.items():
        table = store.load(fs.ref)
        frames[name] = table.assign(name=table["clip_id"].map(names)).set_index("name")
    return {"registry": registry, "specs": specs, "cache": cache, "summaries": summaries,
            "sets": sets, "frames": frames, "work": work}


def test_every_usable_clip_has_one_row_per_extractor_with_the_expected_status(extracted):
    usable = sorted(set(CLIPS) - set(UNUSABLE))
    for name in DEFAULT_SET:
        rows = extracted["frames"][name]
        assert sorted(rows.index) == usable, name                    # one row each, none for errors
        got = {clip: (r.status, None if pd.isna(r.reason) else r.reason) for clip, r in rows.iterrows()}
        want = {clip: NOT_OK.get(clip, {}).get(name, ("ok", None)) for clip in usable}
        assert got == want, name


def test_rows_without_features_carry_no_vector_and_ok_rows_do(extracted):
    for name, rows in extracted["frames"].items():
        ok = rows["status"] == "ok"
        assert rows.loc[ok, "vector"].map(lambda v: v is not None and len(v) > 0).all(), name
        assert rows.loc[~ok, "vector"].isna().all(), name


def test_counts_per_extractor_and_shards_report_no_error(extracted):
    counts = {name: fs.counts for name, fs in extracted["sets"].items()}
    assert counts == {
        "visual_global": {"clips": 22, "ok": 18, "missing": 4},
        "visual_face": {"clips": 22, "ok": 17, "missing": 5},
        "au": {"clips": 22, "ok": 17, "missing": 5},
        "audio_handcrafted": {"clips": 22, "ok": 21, "missing": 1},
        "audio_egemaps": {"clips": 22, "ok": 21, "missing": 1},
        "text": {"clips": 22, "ok": 18, "missing": 4},
    }
    assert all(part["error"] == 0 for s in extracted["summaries"] for part in s["extractors"].values())


def test_odd_sample_rates_are_resampled_to_16k(extracted):
    rows = extracted["frames"]["audio_handcrafted"]
    # 1.5 s at any rate, 8 kHz to 96 kHz, mono or stereo, 16-bit, 24-bit or float: 16 windows
    # of 0.1 s, the same as the 16 kHz wav of a good clip.
    for name in ("good_happy", "wav_8k", "wav_11k", "wav_44k_stereo", "wav_48k", "wav_96k_24bit",
                 "wav_float32"):
        assert rows.loc[name, "seq_len"] == 16, name
    # The wav beside an mp4 that cannot be opened still gives the clip its audio.
    assert rows.loc["random_bytes", "status"] == "ok"


def test_the_three_hour_clip_reads_only_its_first_minute_of_audio(extracted):
    for name in ("audio_handcrafted", "audio_egemaps"):
        row = extracted["frames"][name].loc["three_hours"]
        assert row["status"] == "ok"
        assert row["extra"] == '{"audio_capped_s": 60.0}'
    assert extracted["frames"]["audio_handcrafted"].loc["three_hours", "seq_len"] == 601   # 60 s at 10 Hz
    assert pd.isna(extracted["frames"]["audio_handcrafted"].loc["good_happy", "extra"])


def test_a_rerun_plans_nothing_bad_clips_included(extracted):
    work = extracted["work"]
    _, jobs, cached = plan_features(work / "clips.parquet", extracted["specs"], extracted["cache"])
    assert jobs == []
    assert cached == dict.fromkeys(DEFAULT_SET, 22)     # missing rows are cached too: not retried


def test_three_hour_clip_decodes_in_bounded_time_and_memory(extracted):
    reg = extracted["registry"].set_index("name")
    path = reg.loc["three_hours", "video_path"]
    clip = ClipInput("long", video_path=path, has_video=True, has_audio=True,
                     video_sha256=reg.loc["three_hours", "video_sha256"])
    media = ClipMedia(clip)
    tracemalloc.start()
    cpu = time.process_time()
    frames, times = media.frames(2.0, 32)
    audio = media.audio()
    cpu = time.process_time() - cpu
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # 32 frames spread over the whole three hours (one seek each), not the first 16 s.
    assert len(frames) == 32 and times[0] == 0.0 and times[-1] > THREE_HOURS_S - 400
    assert all(b - a > 300 for a, b in zip(times, times[1:], strict=False))
    assert len(audio) == MAX_AUDIO_SECONDS * SAMPLE_RATE and media.audio_capped
    # Decoding all 10,800 frames and 600 s of audio took 3 s of CPU and 75 MB before the fix
    # (0.25 s and 8 MB now).
    assert cpu < 1.5
    assert peak < 12 * 2**20
