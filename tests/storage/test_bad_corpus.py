"""Ingest of the bad-input corpus (tests/bad_corpus.py): every clip ends registered, with the
status this table expects and a reason naming the file and what is wrong; nothing raises."""

from __future__ import annotations

import pandas as pd
import pytest

from storage import ingest
from storage.labels import MER2025_LABELS
from tests.bad_corpus import CLIPS, GOOD_TEXT, ODD_WAVS, THREE_HOURS_S, build_bad_corpus

pytestmark = pytest.mark.slow          # building and probing the corpus: about 5 s

TRAIN_CSV = "track1_train_disdim.csv"
SUBS = "subtitle_chieng.csv"
# name -> (split, status, label, reason). A reason given as a tuple lists the parts that must
# appear in it, in order (FFmpeg's own words come between them); a string is the whole reason.
EXPECTED = {
    "good_happy": ("train", "ok", "happy", None),
    "label_spaces": ("train", "ok", "happy", None),
    "label_upper": ("train", "ok", "sad", None),
    "label_fullwidth": ("train", "ok", "worried", None),
    "dup_same": ("train", "ok", "neutral", None),
    "dup_conflict": ("train", "error", None,
                     f"listed 2 times in {TRAIN_CSV} with different values (lines 8, 9)"),
    "label_unknown": ("train", "error", None,
                      f"label 'contempt' in {TRAIN_CSV} is not in the label set "
                      "(neutral, angry, happy, sad, worried, surprise)"),
    "label_empty": ("train", "error", None, f"labelled in {TRAIN_CSV} but the label is empty"),
    "good_cand": ("candidate", "ok", None, None),
    "trunc_moov": ("candidate", "degraded", None,
                   ("video file video/trunc_moov.mp4 cannot be opened as media (", "Invalid data")),
    "trunc_faststart": ("candidate", "degraded", None,
                        ("video file video/trunc_faststart.mp4 is truncated: it declares 1.50 s but its "
                         "packets cover ",)),
    "random_bytes": ("candidate", "degraded", None,
                     ("video file video/random_bytes.mp4 cannot be opened as media (", "Invalid data")),
    "zero_frames": ("candidate", "degraded", None,
                    "video file video/zero_frames.mp4: its video stream has no frames"),
    "no_audio": ("candidate", "degraded", None,
                 "audio file audio/no_audio.wav is missing; "
                 "video file video/no_audio.mp4 has no usable audio stream"),
    "three_hours": ("candidate", "degraded", None,
                    "audio file audio/three_hours.wav is missing; "
                    "audio is taken from the video's audio stream"),
    **{name: ("candidate", "ok", None, None) for name in ODD_WAVS},
    "sub_gbk": ("candidate", "degraded", None, f"subtitle in {SUBS} line 25 is not valid UTF-8"),
    "sub_cp1252": ("candidate", "degraded", None, f"subtitle in {SUBS} line 26 is not valid UTF-8"),
    "sub_empty": ("candidate", "degraded", None, "empty english subtitle"),
    "sub_missing": ("candidate", "degraded", None, f"no row in {SUBS}"),
    "junk_only": ("candidate", "error", None,
                  ("no usable video or audio; video file video/junk_only.mp4 cannot be opened as media (",
                   "); audio file audio/junk_only.wav is empty (0 bytes)")),
}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = build_bad_corpus(tmp_path_factory.mktemp("bad") / "corpus")
    scanned = ingest.scan(root, MER2025_LABELS)
    probes, _ = ingest.probe_with_cache(ingest.media_paths(scanned), None)
    registry = ingest.build_registry(scanned, "bad", probes)
    return registry.set_index("name"), scanned, probes


def test_the_table_covers_every_clip_of_the_corpus():
    assert sorted(EXPECTED) == sorted(CLIPS)


def test_every_clip_is_registered_once_with_the_expected_status(ingested):
    reg, scanned, _ = ingested
    assert scanned.layout == "mer2025"
    assert sorted(reg.index) == sorted(EXPECTED)             # none dropped, none invented
    assert reg.index.is_unique
    got = {name: (r.split, r.status, None if pd.isna(r.label) else r.label) for name, r in reg.iterrows()}
    assert got == {name: exp[:3] for name, exp in EXPECTED.items()}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reason_names_the_file_and_what_is_wrong(ingested, name):
    reason = ingested[0].loc[name, "reason"]
    expected = EXPECTED[name][3]
    if expected is None:
        assert pd.isna(reason)
    elif isinstance(expected, str):
        assert reason == expected
    else:
        at = 0
        for part in expected:
            found = reason.find(part, at)
            assert found >= 0, f"{part!r} not in {reason!r} after position {at}"
            at = found + len(part)


def test_streams_rates_and_durations(ingested):
    reg = ingested[0]
    usable_video = {n for n in CLIPS if n not in ("trunc_moov", "trunc_faststart", "random_bytes",
                                                   "zero_frames", "junk_only")
                    and reg.loc[n, "status"] != "error"}
    assert set(reg.index[reg["has_video"]]) == usable_video
    assert not reg.loc["no_audio", "has_audio"]
    for name, (rate, channels, _) in ODD_WAVS.items():
        assert reg.loc[name, ["audio_sample_rate", "audio_channels"]].tolist() == [rate, channels]
        assert reg.loc[name, "duration_s"] == pytest.approx(1.5)      # the video's
    long = reg.loc["three_hours"]
    assert long["duration_s"] == pytest.approx(THREE_HOURS_S)
    assert long[["width", "height", "fps", "audio_sample_rate"]].tolist() == [16, 16, 1.0, 8000]
    # Its audio comes from the mp4 (no wav): no audio hash, the video's stands for it downstream.
    assert long["has_audio"] and pd.isna(long["audio_sha256"])


def test_subtitles_keep_commas_quotes_and_line_breaks_and_drop_bad_bytes(ingested):
    reg = ingested[0]
    assert reg.loc["good_cand", "text"] == GOOD_TEXT
    assert reg.loc["label_spaces", "text"] == "label_spaces speaking."
    for name in ("sub_gbk", "sub_cp1252", "sub_empty", "sub_missing"):
        assert pd.isna(reg.loc[name, "text"]) and not reg.loc[name, "has_text"]


def test_duplicates_are_warned_about_with_their_lines(ingested):
    warnings = ingested[1].warnings
    assert f"{TRAIN_CSV}: 'dup_same' listed 2 times (lines 6, 7); kept once" in warnings
    assert any("'good_cand' listed 2 times" in w for w in warnings)


def test_error_clips_get_no_paths_or_label_and_summary_counts_them(ingested):
    reg = ingested[0]
    errors = reg[reg["status"] == "error"]
    assert sorted(errors.index) == ["dup_conflict", "junk_only", "label_empty", "label_unknown"]
    assert errors.drop(index="junk_only")[["video_path", "audio_path", "label"]].isna().all().all()
    summary = ingest.summarize(reg.reset_index())
    assert (summary["registered"], summary["errors"]) == (len(CLIPS), 4)
    assert summary["ok"] == sum(1 for e in EXPECTED.values() if e[1] == "ok")
    assert summary["by_reason"]["audio file is missing"] == 2


def test_probe_of_the_three_hour_file_covers_every_packet(ingested):
    _, scanned, probes = ingested
    probe = probes[str(scanned.root / "video" / "three_hours.mp4")]
    assert probe["error"] is None
    assert probe["video"]["packets"] == THREE_HOURS_S                 # 1 fps
    assert probe["audio"]["packets"] == THREE_HOURS_S * 8000 // 1024  # 8 kHz AAC, 1024 per packet
