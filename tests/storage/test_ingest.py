"""Ingest of each layout, and every kind of bad input the foundation issue lists."""

from __future__ import annotations

import csv
import shutil
import wave
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import ingest
from storage.labels import MER2025_LABELS
from storage.synthetic import draw_face, voice, write_mp4


def register(path, labels=MER2025_LABELS, **kw):
    scanned = ingest.scan(path, labels, **kw)
    probes, _ = ingest.probe_with_cache(ingest.media_paths(scanned), None)
    return ingest.build_registry(scanned, "t", probes).set_index("name"), scanned


def names(corpus: Path, file: str) -> list[str]:
    with open(corpus / file, newline="", encoding="utf-8") as f:
        return [r["name"] for r in csv.DictReader(f)]


def write_rows(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_synthetic_corpus_registers_every_clip_ok(synthetic_corpus):
    reg, scanned = register(synthetic_corpus)
    assert scanned.layout == "mer2025"
    assert len(reg) == 24
    assert (reg["status"] == "ok").all(), reg["reason"].dropna().tolist()
    assert reg["has_video"].all() and reg["has_audio"].all() and reg["has_text"].all()
    assert set(reg.loc[reg["split"] == "train", "label"]) == set(MER2025_LABELS)
    assert reg.loc[reg["split"] == "candidate", "label"].isna().all()
    # Synthetic clips last 1.5-3.0 s at 10 fps: the duration is the video's, to a frame.
    assert reg["duration_s"].between(1.5 - 0.1, 3.0 + 0.1).all()
    assert reg["video_sha256"].str.len().eq(64).all()
    assert reg["clip_id"].is_unique


def test_registry_is_deterministic(synthetic_corpus):
    a, _ = register(synthetic_corpus)
    b, _ = register(synthetic_corpus)
    assert a.equals(b)


def test_missing_folder_is_a_layout_error(tmp_path):
    with pytest.raises(ingest.LayoutError, match="does not exist"):
        ingest.scan(tmp_path / "nope", MER2025_LABELS)


def test_folder_without_videos_or_csvs_is_a_layout_error(tmp_path):
    with pytest.raises(ingest.LayoutError, match="no video files"):
        ingest.scan(tmp_path, MER2025_LABELS)


def test_csv_missing_a_required_column_names_file_and_column(corpus_copy):
    write_rows(corpus_copy / "track1_train_disdim.csv", ["name", "emotion"], [["x", "happy"]])
    with pytest.raises(ingest.LayoutError, match=r"track1_train_disdim.csv lacks column\(s\) discrete"):
        ingest.scan(corpus_copy, MER2025_LABELS)


def test_unknown_columns_are_reported_not_fatal(corpus_copy):
    path = corpus_copy / "track_all_candidates.csv"
    rows = [[n, "x"] for n in names(corpus_copy, "track_all_candidates.csv")]
    write_rows(path, ["name", "comment"], rows)
    reg, scanned = register(corpus_copy)
    assert any("unknown column(s) comment" in w for w in scanned.warnings)
    assert (reg["status"] == "ok").all()


def test_label_outside_the_label_set_is_a_clip_error(corpus_copy):
    path = corpus_copy / "track1_train_disdim.csv"
    train = names(corpus_copy, "track1_train_disdim.csv")
    rows = [[n, "contempt" if i == 0 else "happy", ""] for i, n in enumerate(train)]
    write_rows(path, ["name", "discrete", "valence"], rows)
    reg, _ = register(corpus_copy)
    bad = reg.loc[train[0]]
    assert bad["status"] == "error"
    assert "label 'contempt' in track1_train_disdim.csv is not in the label set" in bad["reason"]
    assert (reg.drop(index=train[0])["status"] == "ok").all()


def test_labels_are_normalised_and_the_label_set_is_configuration(corpus_copy):
    path = corpus_copy / "track1_train_disdim.csv"
    train = names(corpus_copy, "track1_train_disdim.csv")
    raw = path.read_bytes().replace(b"happy", b"  Happy ")
    path.write_bytes(b"\xef\xbb\xbf" + raw.replace(b"\n", b"\r\n"))  # BOM + CRLF
    reg, _ = register(corpus_copy)
    assert reg.loc[train, "status"].eq("ok").all()
    only_two = ("happy", "sad")
    reg2, _ = register(corpus_copy, labels=only_two)
    train2 = reg2[reg2["split"] == "train"]
    wrong = train2[train2["label"].notna() & ~train2["label"].isin(only_two)]
    assert len(wrong) == 0
    assert (reg2.loc[train, "status"] == "error").sum() == len(train) - 4


def test_conflicting_duplicate_names_are_errors_identical_ones_are_kept_once(corpus_copy):
    path = corpus_copy / "track1_train_disdim.csv"
    with open(path, newline="", encoding="utf-8") as f:
        first_row = next(csv.DictReader(f))
    other = "sad" if first_row["discrete"] != "sad" else "happy"
    with open(path, "a", newline="", encoding="utf-8") as f:
        f.write(f"{first_row['name']},{other},\n")
    reg, scanned = register(corpus_copy)
    conflicted = reg.loc[first_row["name"]]
    assert conflicted["status"] == "error"
    assert "listed 2 times in track1_train_disdim.csv with different values (lines 2, " \
        in conflicted["reason"]
    # An identical duplicate is only a warning.
    candidate = names(corpus_copy, "track_all_candidates.csv")[0]
    with open(corpus_copy / "track_all_candidates.csv", "a", encoding="utf-8") as f:
        f.write(candidate + "\n")
    reg, scanned = register(corpus_copy)
    assert reg.index.is_unique
    assert reg.loc[candidate, "status"] == "ok"
    assert any(f"{candidate!r} listed 2 times" in w for w in scanned.warnings)


def test_clip_listed_as_both_labelled_and_candidate_is_an_error(corpus_copy):
    train = names(corpus_copy, "track1_train_disdim.csv")
    with open(corpus_copy / "track_all_candidates.csv", "a", encoding="utf-8") as f:
        f.write(train[0] + "\n")
    reg, _ = register(corpus_copy)
    assert reg.loc[train[0], "status"] == "error"
    assert "listed in both" in reg.loc[train[0], "reason"]


@pytest.mark.parametrize("bad", ["../escape", "a/b", "..", "x\\y"])
def test_names_with_path_separators_or_dotdot_are_errors(corpus_copy, bad):
    with open(corpus_copy / "track_all_candidates.csv", "a", encoding="utf-8") as f:
        f.write(bad + "\n")
    reg, _ = register(corpus_copy)
    assert reg.loc[bad, "status"] == "error"
    assert "path separator or '..'" in reg.loc[bad, "reason"]
    assert pd.isna(reg.loc[bad, "video_path"])              # never turned into a path
    assert (reg.drop(index=bad)["status"] == "ok").all()


def test_missing_video_file_is_reported_and_audio_still_counts(corpus_copy):
    name = names(corpus_copy, "track_all_candidates.csv")[0]
    (corpus_copy / "video" / f"{name}.mp4").unlink()
    reg, _ = register(corpus_copy)
    row = reg.loc[name]
    assert row["status"] == "degraded"
    assert f"video file video/{name}.mp4 is missing" in row["reason"]
    assert not row["has_video"] and row["has_audio"]


def test_clip_with_no_media_at_all_is_an_error(corpus_copy):
    name = names(corpus_copy, "track_all_candidates.csv")[0]
    (corpus_copy / "video" / f"{name}.mp4").unlink()
    (corpus_copy / "audio" / f"{name}.wav").unlink()
    reg, _ = register(corpus_copy)
    assert reg.loc[name, "status"] == "error"
    assert "no usable video or audio" in reg.loc[name, "reason"]


def test_truncated_and_non_video_mp4s_are_reported(corpus_copy):
    a, b = names(corpus_copy, "track_all_candidates.csv")[:2]
    path = corpus_copy / "video" / f"{a}.mp4"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    (corpus_copy / "video" / f"{b}.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    reg, _ = register(corpus_copy)
    for name in (a, b):
        assert reg.loc[name, "status"] == "degraded"           # its wav still has audio
        assert f"video file video/{name}.mp4 cannot be opened as media" in reg.loc[name, "reason"]
        assert not reg.loc[name, "has_video"]


def test_truncated_faststart_mp4_is_caught_by_its_packets(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as c:
        vs = c.add_stream("libx264", rate=10)
        vs.width = vs.height = 128
        vs.pix_fmt = "yuv420p"
        for k in range(30):
            c.mux(vs.encode(av.VideoFrame.from_ndarray(draw_face("sad", k / 10, rng), format="rgb24")))
        c.mux(vs.encode())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    reg, _ = register(tmp_path)
    assert reg.loc["clip", "status"] == "error"
    assert "is truncated: it declares 3.00 s" in reg.loc["clip", "reason"]


def test_mp4_without_audio_stream_and_without_video_stream(tmp_path):
    rng = np.random.default_rng(0)
    frames = [draw_face("happy", k / 10, rng) for k in range(20)]
    write_mp4(tmp_path / "silent.mp4", frames, None)
    x = voice("happy", 2.0, rng)
    with av.open(str(tmp_path / "voiceonly.mp4"), "w", format="mp4") as c:
        a = c.add_stream("aac", rate=16000)
        a.codec_context.layout = "mono"
        for s in range(0, len(x), 1024):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[None, s:s + 1024]),
                                            format="fltp", layout="mono")
            af.sample_rate, af.pts = 16000, s
            c.mux(a.encode(af))
        c.mux(a.encode())
    reg, scanned = register(tmp_path)
    assert scanned.layout == "folder"
    silent, voiceonly = reg.loc["silent"], reg.loc["voiceonly"]
    assert silent["status"] == "degraded" and silent["has_video"] and not silent["has_audio"]
    assert "has no usable audio stream" in silent["reason"]
    assert silent["duration_s"] == pytest.approx(2.0)
    assert voiceonly["status"] == "degraded" and voiceonly["has_audio"]
    assert not voiceonly["has_video"] and "has no video stream" in voiceonly["reason"]


def test_zero_length_wav_falls_back_to_the_videos_audio(corpus_copy):
    name = names(corpus_copy, "track_all_candidates.csv")[0]
    (corpus_copy / "audio" / f"{name}.wav").write_bytes(b"")
    reg, _ = register(corpus_copy)
    row = reg.loc[name]
    assert row["status"] == "degraded" and row["has_audio"]
    assert f"audio file audio/{name}.wav is empty (0 bytes)" in row["reason"]
    assert "audio is taken from the video's audio stream" in row["reason"]


def test_header_only_wav_has_no_samples(corpus_copy):
    name = names(corpus_copy, "track_all_candidates.csv")[0]
    with wave.open(str(corpus_copy / "audio" / f"{name}.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
    reg, _ = register(corpus_copy)
    assert "its audio stream has no samples" in reg.loc[name, "reason"]


def test_subtitle_that_is_not_utf8_is_named_and_others_keep_their_text(corpus_copy):
    path = corpus_copy / "subtitle_chieng.csv"
    lines = path.read_bytes().split(b"\n")
    victim = lines[1].split(b",")[0].decode()
    lines[1] = lines[1] + b" caf\xe9 \x92quoted\x92"           # cp1252 bytes
    path.write_bytes(b"\n".join(lines))
    reg, _ = register(corpus_copy)
    row = reg.loc[victim]
    assert row["status"] == "degraded" and not row["has_text"]
    assert "subtitle in subtitle_chieng.csv line 2 is not valid UTF-8" in row["reason"]
    assert reg.drop(index=victim)["has_text"].all()


def test_unlisted_videos_are_reported_not_silently_dropped(corpus_copy):
    shutil.copy(next((corpus_copy / "video").glob("*.mp4")), corpus_copy / "video" / "stray.mp4")
    reg, scanned = register(corpus_copy)
    assert "stray" not in reg.index
    assert any("1 video(s) in video/ are listed in neither" in w and "stray" in w
               for w in scanned.warnings)


def test_manifest_layout(corpus_copy, tmp_path):
    video = sorted((corpus_copy / "video").glob("*.mp4"))
    rows = [
        ["a", f"{video[0]}", "", "hello", "happy", "train"],
        ["b", f"{video[1]}", "", "", "", ""],
        ["c", f"{video[2]}", "", "", "sad", "test"],
        ["d", "", "", "", "", "unlabeled"],
        ["e", f"{video[3]}", "", "", "", "holdout"],
    ]
    manifest = tmp_path / "m.csv"
    write_rows(manifest, ["name", "video", "audio", "text", "label", "split"], rows)
    reg, scanned = register(manifest)
    assert scanned.layout == "manifest"
    assert reg.loc["a", ["split", "label", "text", "status"]].tolist() == ["train", "happy", "hello", "ok"]
    assert reg.loc["b", "split"] == "candidate" and reg.loc["b", "status"] == "ok"
    assert reg.loc["c", "split"] == "test"
    assert "neither a video nor an audio file" in reg.loc["d", "reason"]
    assert "split 'holdout'" in reg.loc["e", "reason"]


def test_folder_layout_with_labels_csv(corpus_copy, tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    video = sorted((corpus_copy / "video").glob("*.mp4"))[:3]
    for v in video:
        shutil.copy(v, folder / v.name)
    write_rows(folder / "labels.csv", ["name", "discrete"],
               [[video[0].stem, "happy"], ["ghost", "sad"]])
    reg, scanned = register(folder)
    assert scanned.layout == "folder"
    assert reg.loc[video[0].stem, ["split", "label"]].tolist() == ["train", "happy"]
    assert reg.loc[video[1].stem, "split"] == "candidate"
    assert reg.loc["ghost", "status"] == "error"
    assert "no video file named ghost.* is in the folder" in reg.loc["ghost", "reason"]


def test_reason_counts_group_clip_specific_text(corpus_copy):
    for name in names(corpus_copy, "track_all_candidates.csv")[:3]:
        (corpus_copy / "audio" / f"{name}.wav").write_bytes(b"")
    reg, _ = register(corpus_copy)
    summary = ingest.summarize(reg.reset_index())
    assert summary["by_reason"]["audio file is empty"] == 3
    assert summary["degraded"] == 3 and summary["errors"] == 0


cell = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(cell, cell), min_size=1, max_size=8))
def test_read_csv_round_trips_what_csv_writes(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("csv") / "t.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([" Name ", "DISCRETE"])
        w.writerows(rows)
    parsed, warnings = ingest.read_csv(path, ("name", "discrete"))
    expected = [(a.strip(), b.strip()) for a, b in rows if a.strip() or b.strip()]
    assert [(r.values["name"], r.values["discrete"]) for r in parsed] == expected
    assert warnings == []
