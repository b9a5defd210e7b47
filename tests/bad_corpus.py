"""A corpus of bad input in MER2025 layout, next to a few good clips (all synthetic).

`build_bad_corpus(out)` writes, in about two seconds, one dataset holding every kind of broken
input the hardening issue lists, so that ingest (tests/storage/test_bad_corpus.py) and feature
extraction (tests/tasks/test_bad_corpus_features.py) can be run over all of them at once:

- media: a truncated mp4 (its index at the end, cut in half), a truncated "faststart" mp4
  (index first, packets cut), random bytes named .mp4, a fragmented mp4 whose video stream
  has no frame, an mp4 without audio stream and no wav, a 3-hour mp4 (16x16 at 1 fps with a
  silent AAC track, 0.5 MB), wavs at 8 kHz, 11025 Hz, 44.1 kHz stereo, 48 kHz, 96 kHz 24-bit
  and 32-bit float, and a clip whose mp4 and wav are both unusable;
- subtitles: GBK bytes, cp1252 bytes, an empty subtitle, a clip with no subtitle row, and a
  good one with a comma, quotes and a line break inside its quoted cell;
- label CSVs: UTF-8 BOM, CRLF line ends, stray whitespace around names and labels, upper-case
  and full-width labels, identical duplicate rows, conflicting rows, an unknown and an empty
  label.

Every clip but the good ones is named after what is wrong with it (`CLIPS`).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from storage.synthetic import draw_face, voice, write_mp4, write_wav

THREE_HOURS_S = 3 * 3600
GOOD_TEXT = 'Well, she said "no"\nand left.'     # comma, quotes and a line break in one cell
# Odd wavs: name -> (sample rate, channels, soundfile subtype).
ODD_WAVS = {
    "wav_8k": (8000, 1, "PCM_16"),
    "wav_11k": (11025, 1, "PCM_16"),
    "wav_44k_stereo": (44100, 2, "PCM_16"),
    "wav_48k": (48000, 1, "PCM_16"),
    "wav_96k_24bit": (96000, 1, "PCM_24"),
    "wav_float32": (22050, 1, "FLOAT"),
}
CLIP_SECONDS = 1.5
# Every clip the CSVs list, by split (the names as registered: whitespace stripped).
TRAIN = ("good_happy", "label_spaces", "label_upper", "label_fullwidth", "dup_same", "dup_conflict",
         "label_unknown", "label_empty")
CANDIDATES = ("good_cand", "trunc_moov", "trunc_faststart", "random_bytes", "zero_frames", "no_audio",
              "three_hours", *ODD_WAVS, "sub_gbk", "sub_cp1252", "sub_empty", "sub_missing", "junk_only")
CLIPS = TRAIN + CANDIDATES


def build_bad_corpus(out: str | Path, seed: int = 0) -> Path:
    """Write the bad corpus to `out` (video/, audio/ and the three CSVs); returns `out`."""
    out = Path(out)
    video, audio = out / "video", out / "audio"
    video.mkdir(parents=True, exist_ok=True)
    audio.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    good_mp4, good_wav = video / "good_happy.mp4", audio / "good_happy.wav"
    _good_clip(good_mp4, good_wav, "happy", rng)
    _good_clip(video / "good_cand.mp4", audio / "good_cand.wav", "sad", rng)
    # Label-CSV cases: good media, only their rows are odd.
    for name in TRAIN[1:]:
        _copy(good_mp4, video / f"{name}.mp4")
        _copy(good_wav, audio / f"{name}.wav")
    # Media cases: a good wav beside a broken mp4 unless said otherwise.
    data = good_mp4.read_bytes()
    (video / "trunc_moov.mp4").write_bytes(data[: len(data) // 2])
    _faststart_mp4(video / "trunc_faststart.mp4", rng)
    faststart = (video / "trunc_faststart.mp4").read_bytes()
    (video / "trunc_faststart.mp4").write_bytes(faststart[: len(faststart) // 2])
    (video / "random_bytes.mp4").write_bytes(rng.bytes(5000))
    _zero_frame_mp4(video / "zero_frames.mp4")
    for name in ("trunc_moov", "trunc_faststart", "random_bytes", "zero_frames"):
        _copy(good_wav, audio / f"{name}.wav")
    frames = [draw_face("angry", k / 10, rng) for k in range(int(CLIP_SECONDS * 10))]
    write_mp4(video / "no_audio.mp4", frames, None)                  # and no wav
    three_hour_mp4(video / "three_hours.mp4")                       # and no wav
    for name, (rate, channels, subtype) in ODD_WAVS.items():
        _copy(good_mp4, video / f"{name}.mp4")
        sf.write(audio / f"{name}.wav", _tone(rate, channels, rng), rate, subtype=subtype)
    for name in ("sub_gbk", "sub_cp1252", "sub_empty", "sub_missing"):
        _copy(good_mp4, video / f"{name}.mp4")
        _copy(good_wav, audio / f"{name}.wav")
    (video / "junk_only.mp4").write_bytes(rng.bytes(3000))
    (audio / "junk_only.wav").write_bytes(b"")
    _write_label_csvs(out)
    _write_subtitles(out)
    return out


def _good_clip(mp4: Path, wav: Path, label: str, rng: np.random.Generator) -> None:
    frames = [draw_face(label, k / 10, rng) for k in range(int(CLIP_SECONDS * 10))]
    x = voice(label, CLIP_SECONDS, rng)
    write_mp4(mp4, frames, x)
    write_wav(wav, x)


def _copy(src: Path, dest: Path) -> None:
    dest.write_bytes(src.read_bytes())


def _tone(rate: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """CLIP_SECONDS of a voiced vowel-like tone at `rate`, (n,) or (n, channels) float32."""
    t = np.arange(int(CLIP_SECONDS * rate)) / rate
    x = sum(np.sin(2 * np.pi * 180 * k * t) / k for k in range(1, 6)) * 0.2
    x = (x + rng.normal(0, 0.005, len(t))).astype(np.float32)
    return x if channels == 1 else np.stack([x, 0.5 * x], axis=1)


def _faststart_mp4(path: Path, rng: np.random.Generator) -> None:
    """A video-only mp4 with its index first, so cutting it keeps it openable."""
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as c:
        vs = c.add_stream("libx264", rate=10)
        vs.width = vs.height = 128
        vs.pix_fmt = "yuv420p"
        for k in range(int(CLIP_SECONDS * 10)):
            c.mux(vs.encode(av.VideoFrame.from_ndarray(draw_face("sad", k / 10, rng), format="rgb24")))
        c.mux(vs.encode())


def _zero_frame_mp4(path: Path) -> None:
    """An mp4 that declares an H.264 stream holding no frame. A plain mp4 drops a track with no
    samples; a fragmented one writes every track in its header before any sample."""
    with av.open(str(path), "w", format="mp4", options={"movflags": "+frag_keyframe+empty_moov"}) as c:
        vs = c.add_stream("libx264", rate=10)
        vs.width = vs.height = 64
        vs.pix_fmt = "yuv420p"
        c.start_encoding()
        c.mux(vs.encode())


def three_hour_mp4(path: Path, seconds: int = THREE_HOURS_S) -> None:
    """A `seconds`-long mp4 that is cheap to write: 16x16 grey H.264 at 1 fps with a keyframe
    every 30 s, and silent 8 kHz AAC. One group of pictures and one steady silent AAC packet
    are encoded, then muxed again and again at later times (0.5 MB, about a second)."""
    gop, rate = 30, 8000
    with av.open(str(path), "w", format="mp4") as c:
        vs = c.add_stream("libx264", rate=1)
        vs.width = vs.height = 16
        vs.pix_fmt = "yuv420p"
        vs.codec_context.thread_count = 1
        # ultrafast has no B-frames: packets come in presentation order, pts == dts.
        vs.options = {"preset": "ultrafast", "g": str(gop), "crf": "40"}
        aus = c.add_stream("aac", rate=rate)
        aus.codec_context.layout = "mono"
        grey = np.full((16, 16, 3), 120, np.uint8)
        pictures = []
        for k in range(gop):
            frame = av.VideoFrame.from_ndarray(grey, format="rgb24")
            frame.pts = k
            pictures += vs.encode(frame)
        pictures += vs.encode()
        pictures = [(bytes(p), p.pts, p.is_keyframe) for p in pictures]
        silence = np.zeros((1, 1024), np.float32)
        packets = []
        for start in range(0, 8 * 1024, 1024):                      # past the encoder's priming
            af = av.AudioFrame.from_ndarray(silence, format="fltp", layout="mono")
            af.sample_rate, af.pts = rate, start
            packets += aus.encode(af)
        steady = bytes(packets[-1])
        vbase, abase = Fraction(1, 1), Fraction(1, rate)        # the encoders' time bases
        n_audio = seconds * rate // 1024
        for g in range(0, seconds, gop):                            # one group of pictures, and
            for data, pts, key in pictures[: seconds - g]:          # the audio of its seconds
                c.mux(_packet(data, vs, g + pts, vbase, key))
            for i in range(-(-g * rate // 1024), min(n_audio, -(-(g + gop) * rate // 1024))):
                c.mux(_packet(steady, aus, (i - 1) * 1024, abase, True))


def _packet(data: bytes, stream, pts: int, time_base, keyframe: bool) -> av.Packet:
    packet = av.Packet(data)
    packet.stream, packet.pts, packet.dts, packet.time_base = stream, pts, pts, time_base
    packet.is_keyframe = keyframe
    return packet


def _csv_bytes(lines: list[str], bom: bool = True) -> bytes:
    """CRLF line ends and (by default) a UTF-8 BOM, as spreadsheet programs write CSV."""
    return (b"\xef\xbb\xbf" if bom else b"") + "".join(line + "\r\n" for line in lines).encode("utf-8")


def _write_label_csvs(out: Path) -> None:
    train = [
        "Name , Discrete ,valence",                     # header: stray spaces and capitals
        "good_happy,happy,0.5",
        "  label_spaces  ,  Happy  ,",
        "label_upper,SAD,-0.3",
        "label_fullwidth,ＷＯＲＲＩＥＤ,",                 # full-width letters (NFKC: worried)
        "dup_same,neutral,",
        "dup_same , Neutral ,",                          # the same row again, written differently
        "dup_conflict,happy,",
        "dup_conflict,angry,",
        "label_unknown,contempt,",
        "label_empty,,",
        ",,",                                            # a blank row, skipped
    ]
    (out / "track1_train_disdim.csv").write_bytes(_csv_bytes(train))
    cands = ["name", *CANDIDATES, "good_cand"]          # good_cand listed twice, identically
    (out / "track_all_candidates.csv").write_bytes(_csv_bytes(cands))


def _write_subtitles(out: Path) -> None:
    rows = [b"name,chinese,english"]
    for name in CLIPS:
        if name in ("sub_gbk", "sub_cp1252", "sub_empty", "sub_missing"):
            continue
        text = GOOD_TEXT if name == "good_cand" else f"{name} speaking."
        rows.append(f'{name},,"{text.replace(chr(34), chr(34) * 2)}"'.encode())
    rows.append(b"sub_gbk,," + "你好，世界".encode("gbk"))
    rows.append(b"sub_cp1252,,caf\xe9 \x93quoted\x94")
    rows.append(b"sub_empty,,")
    (out / "subtitle_chieng.csv").write_bytes(b"\r\n".join(rows) + b"\r\n")
