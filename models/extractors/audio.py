"""Audio features from 16 kHz mono (the wav when there is one, else the video's track).

- `audio_handcrafted` (librosa): 40 MFCC with deltas, 64-band log-mel, pitch (YIN) and
  energy (RMS), per 10 ms frame; the sequence is those frames pooled to `seq_hz` (10 Hz by
  default) for the early audio-text fusion module; the vector is mean and std over time.
- `audio_egemaps` (openSMILE): the 88 eGeMAPSv02 functionals.
- `audio_hf`: any Hugging Face speech encoder (HuBERT, wav2vec2, WavLM) from a name or a local
  path, pooled as MERTools pools: hidden states of the last `layers` layers averaged, then the
  mean over time; the sequence is the averaged hidden states pooled to `seq_hz`.
Optional denoising (`denoise=True`): spectral gating against the quietest 10 % of frames.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from models.extractors.base import ClipInput, Extractor, FeatureRow
from models.extractors.clip_media import ClipMedia
from models.hf import quiet_transformers
from models.media import MAX_AUDIO_SECONDS, SAMPLE_RATE, MediaError
from storage.locks import flocked

HOP = 160   # 10 ms at 16 kHz
# Held while a process first runs librosa's cached gufuncs (`warm_numba_cache`).
NUMBA_WARM_LOCK = os.path.join(tempfile.gettempdir(), "mersemi-numba-warm.lock")
_warmed = False


def warm_numba_cache(features) -> None:
    """Run `features` (a clip's feature function) once on a second of noise, one process at a
    time on this machine, before the process extracts anything.

    librosa's gufuncs (yin's localmin) are compiled with numba's `cache=True`, and numba writes a
    gufunc's two cache files separately: processes compiling at once (the shard workers of a new
    installation) can leave a pair from two of them, and every later load of it segfaults
    (numba/numba#10128; seen here in the test suite on a new venv). Under the lock, the first
    process compiles and writes the cache whole; the others wait and then load it."""
    global _warmed
    if _warmed:
        return
    with flocked(NUMBA_WARM_LOCK):
        noise = np.random.default_rng(0).standard_normal(SAMPLE_RATE).astype(np.float32)
        features("numba-warm-up", noise)
    _warmed = True


def pool_time(frames: np.ndarray, frame_hz: float, seq_hz: float) -> np.ndarray:
    """Average (T, D) frames at frame_hz into windows at seq_hz."""
    step = max(1, round(frame_hz / seq_hz))
    n = int(np.ceil(len(frames) / step))
    return np.stack([frames[i * step:(i + 1) * step].mean(0) for i in range(n)]).astype(np.float32)


def spectral_gate(y: np.ndarray, n_fft: int = 512) -> np.ndarray:
    """Subtract the noise floor (the quietest 10 % of frames) from the magnitude spectrum."""
    import librosa

    spec = librosa.stft(y, n_fft=n_fft, hop_length=HOP)
    mag, phase = np.abs(spec), np.angle(spec)
    energy = mag.sum(0)
    quiet = mag[:, energy <= np.quantile(energy, 0.1)]
    floor = quiet.mean(1, keepdims=True) if quiet.size else 0.0
    cleaned = np.maximum(mag - 1.5 * floor, 0.0) * np.exp(1j * phase)
    return librosa.istft(cleaned, hop_length=HOP, length=len(y)).astype(np.float32)


class _AudioExtractor(Extractor):
    modality = "audio"
    denoise: bool = False

    def _audio(self, clip: ClipInput, media: dict[str, ClipMedia]) -> np.ndarray:
        y = media[clip.clip_id].audio()
        if len(y) < SAMPLE_RATE // 10:
            raise MediaError(f"audio is {len(y) / SAMPLE_RATE:.3f} s long, under 0.1 s")
        return spectral_gate(y) if self.denoise else y

    def extract(self, clips: list[ClipInput], media: dict[str, ClipMedia]) -> list[FeatureRow]:
        rows = []
        for clip in clips:
            try:
                y = self._audio(clip, media)
            except MediaError as exc:
                rows.append(FeatureRow.missing(clip.clip_id, str(exc)))
                continue
            row = self._features(clip.clip_id, y)
            if media[clip.clip_id].audio_capped:
                row.extra["audio_capped_s"] = MAX_AUDIO_SECONDS      # only the first part was read
            rows.append(row)
        return rows

    def _features(self, clip_id: str, y: np.ndarray) -> FeatureRow:
        raise NotImplementedError


class AudioHandcrafted(_AudioExtractor):
    name = "audio_handcrafted"

    def __init__(self, n_mfcc: int = 40, n_mels: int = 64, seq_hz: float = 10.0, denoise: bool = False):
        self.n_mfcc, self.n_mels, self.seq_hz, self.denoise = n_mfcc, n_mels, seq_hz, denoise

    def setup(self) -> None:
        import librosa

        self.librosa_ = librosa
        warm_numba_cache(self._features)

    def _features(self, clip_id: str, y: np.ndarray) -> FeatureRow:
        lr = self.librosa_
        mel = lr.feature.melspectrogram(y=y, sr=SAMPLE_RATE, n_fft=400, hop_length=HOP, n_mels=self.n_mels)
        logmel = lr.power_to_db(mel + 1e-10)
        mfcc = lr.feature.mfcc(S=logmel, n_mfcc=self.n_mfcc)
        delta = lr.feature.delta(mfcc, width=9)            # >= 0.1 s of audio gives >= 11 frames
        f0 = lr.yin(y, fmin=60, fmax=500, sr=SAMPLE_RATE, frame_length=1024, hop_length=HOP)
        rms = lr.feature.rms(y=y, frame_length=400, hop_length=HOP)[0]
        n = min(mfcc.shape[1], len(f0), len(rms))
        frames = np.concatenate([mfcc[:, :n], delta[:, :n], logmel[:, :n],
                                 np.log(f0[None, :n]), np.log(rms[None, :n] + 1e-6)]).T   # (T, D)
        vector = np.concatenate([frames.mean(0), frames.std(0)]).astype(np.float32)
        return FeatureRow(clip_id, vector=vector, sequence=pool_time(frames, SAMPLE_RATE / HOP, self.seq_hz))


class AudioEgemaps(_AudioExtractor):
    name = "audio_egemaps"

    def __init__(self, denoise: bool = False):
        self.denoise = denoise

    def setup(self) -> None:
        import opensmile

        self.smile_ = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                      feature_level=opensmile.FeatureLevel.Functionals)

    def _features(self, clip_id: str, y: np.ndarray) -> FeatureRow:
        values = self.smile_.process_signal(y, SAMPLE_RATE).to_numpy()[0]
        return FeatureRow(clip_id, vector=np.nan_to_num(values).astype(np.float32))


class AudioHF(_AudioExtractor):
    name = "audio_hf"

    def __init__(self, model: str, layers: int = 4, seq_hz: float = 10.0, max_seconds: float = 30.0,
                 denoise: bool = False, device: str = "cpu"):
        self.model, self.layers, self.seq_hz = model, layers, seq_hz
        self.max_seconds, self.denoise, self.device = max_seconds, denoise, device

    def params(self) -> dict:
        return {k: v for k, v in super().params().items() if k != "device"}

    def setup(self) -> None:
        import torch
        from transformers import AutoFeatureExtractor, AutoModel

        quiet_transformers()
        self.torch_ = torch
        self.processor_ = AutoFeatureExtractor.from_pretrained(self.model)
        self.model_ = AutoModel.from_pretrained(self.model).to(self.device).eval()

    def _features(self, clip_id: str, y: np.ndarray) -> FeatureRow:
        y = y[: int(self.max_seconds * SAMPLE_RATE)]
        inputs = self.processor_(y, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        with self.torch_.inference_mode():
            out = self.model_(**{k: v.to(self.device) for k, v in inputs.items()}, output_hidden_states=True)
        hidden = self.torch_.stack(out.hidden_states[-self.layers:]).mean(0)[0]   # (T, D)
        frames = hidden.float().cpu().numpy()
        frame_hz = len(frames) / (len(y) / SAMPLE_RATE)
        return FeatureRow(clip_id, vector=frames.mean(0).astype(np.float32),
                          sequence=pool_time(frames, frame_hz, self.seq_hz))
