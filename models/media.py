"""Decoding for the feature extractors: frames sampled at a rate, audio as 16 kHz mono.

Both raise MediaError with the file and what went wrong; extractors turn it into a clip's
status and reason rather than stopping a shard.
"""

from __future__ import annotations

import os

import av
import numpy as np

SAMPLE_RATE = 16000
# Decoder threads per stream: 0 lets FFmpeg choose (frame threads over every core); worker
# processes set 1, since they already run one per core.
DECODE_THREADS_ENV = "MERSEMI_DECODE_THREADS"


class MediaError(RuntimeError):
    """A media file could not be decoded as the extractor needs it."""


def sample_frames(path: str, fps: float = 2.0, max_frames: int = 64) -> tuple[list[np.ndarray], list[float]]:
    """RGB frames (H, W, 3) uint8 sampled at about `fps`, with their times in seconds.

    Every frame is decoded (H.264 needs its references) but only the sampled ones are
    converted; clips longer than max_frames / fps are sampled evenly over their length.
    """
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            threads = int(os.environ.get(DECODE_THREADS_ENV, "0"))
            if threads != 1:
                stream.thread_type = "AUTO"
            stream.codec_context.thread_count = threads
            duration = (float(stream.duration * stream.time_base) if stream.duration
                        else (container.duration or 0) / av.time_base)
            step = max(1.0 / fps, duration / max_frames if duration else 0.0)
            frames, times, next_t = [], [], 0.0
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else len(times) / fps
                if t + 1e-6 >= next_t:
                    frames.append(frame.to_ndarray(format="rgb24"))
                    times.append(float(t))
                    next_t = t + step
                    if len(frames) >= max_frames:
                        break
    except (av.FFmpegError, IndexError, ValueError) as exc:
        raise MediaError(f"{path}: cannot decode video ({exc})") from exc
    if not frames:
        raise MediaError(f"{path}: no video frame decoded")
    return frames, times


def load_audio(path: str, sample_rate: int = SAMPLE_RATE, max_seconds: float = 600.0) -> np.ndarray:
    """The first audio stream of a file as float32 mono at `sample_rate`, at most max_seconds."""
    try:
        with av.open(path) as container:
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            chunks, n, limit = [], 0, int(max_seconds * sample_rate)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)
                    chunks.append(chunk)
                    n += len(chunk)
                if n >= limit:
                    break
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except (av.FFmpegError, IndexError, ValueError) as exc:
        raise MediaError(f"{path}: cannot decode audio ({exc})") from exc
    if not chunks:
        raise MediaError(f"{path}: no audio samples decoded")
    return np.concatenate(chunks)[:limit].astype(np.float32, copy=False)
