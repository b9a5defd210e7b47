"""Decoding for the feature extractors: frames sampled at a rate, audio as 16 kHz mono.

Both raise MediaError with the file and what went wrong; extractors turn it into a clip's
status and reason rather than stopping a shard.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import av
import numpy as np

SAMPLE_RATE = 16000
# Decoder threads per stream: 0 lets FFmpeg choose (frame threads over every core); worker
# processes set 1, since they already run one per core.
DECODE_THREADS_ENV = "MERSEMI_DECODE_THREADS"
# Sampled frames further apart than this are reached by seeking rather than by decoding every
# frame between them (with the defaults, 2 fps and 32 frames, clips over 320 s).
SEEK_STEP_S = 10.0
# The audio the extractors read: the first minute. A clip is an utterance (MER clips last a
# few seconds); a longer file (a 3-hour recording listed as a clip) would otherwise cost
# librosa about 2 MB of memory per second of audio and openSMILE as long again in time.
MAX_AUDIO_SECONDS = 60.0


class MediaError(RuntimeError):
    """A media file could not be decoded as the extractor needs it."""


def sample_frames(path: str, fps: float = 2.0, max_frames: int = 64,
                  transform: Callable[[np.ndarray], np.ndarray] | None = None
                  ) -> tuple[list[np.ndarray], list[float]]:
    """RGB frames (H, W, 3) uint8 sampled at about `fps`, with their times in seconds.

    Clips longer than max_frames / fps are sampled evenly over their length. A short clip is
    decoded frame by frame (H.264 needs its references) and only the sampled frames are
    converted; when the samples lie more than SEEK_STEP_S apart (a long file), each one is
    reached by seeking to the keyframe before it instead, so the work is bounded by
    max_frames, not by the duration (a 3-hour file costs what a minute does). `transform`
    (e.g. a downscale) is applied to each frame as it is converted, so only its output is kept.
    """
    transform = transform or (lambda frame: frame)
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
            if step >= SEEK_STEP_S:
                frames, times = _frames_by_seeking(container, stream, step, duration, max_frames, transform)
            else:
                frames, times, next_t = [], [], 0.0
                for frame in container.decode(stream):
                    t = frame.time if frame.time is not None else len(times) / fps
                    if t + 1e-6 >= next_t:
                        frames.append(transform(frame.to_ndarray(format="rgb24")))
                        times.append(float(t))
                        next_t = t + step
                        if len(frames) >= max_frames:
                            break
    except (av.FFmpegError, IndexError, ValueError) as exc:
        raise MediaError(f"{path}: cannot decode video ({exc})") from exc
    if not frames:
        raise MediaError(f"{path}: no video frame decoded")
    return frames, times


def _frames_by_seeking(container, stream, step: float, duration: float, max_frames: int,
                       transform: Callable[[np.ndarray], np.ndarray]) -> tuple[list[np.ndarray], list[float]]:
    """The first frame at or after each of max_frames evenly spaced times, one seek each."""
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    frames: list[np.ndarray] = []
    times: list[float] = []
    for i in range(max_frames):
        target = start + i * step
        if i and target >= start + duration:
            break
        container.seek(int(target / stream.time_base), stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            t = frame.time
            if t is None or t + 1e-6 < target:
                continue
            if not times or t > times[-1]:
                frames.append(transform(frame.to_ndarray(format="rgb24")))
                times.append(float(t))
            break
    return frames, times


def load_audio(path: str, sample_rate: int = SAMPLE_RATE,
               max_seconds: float = MAX_AUDIO_SECONDS) -> np.ndarray:
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
