"""Torch modules of the baseline: modality experts and the two fusion heads.

Experts encode one feature set each into a common width `hidden`:
- `MLPExpert`: a clip-level vector (B, D) -> (B, H).
- `TemporalExpert`: a frame-level sequence (B, T, D) with padding mask -> (B, H), a small
  transformer encoder read out through a learned CLS token.
- `AudioTextJoint` (the MER2024 second-place team's answer to audio and text competing in
  late fusion): frame-level audio (B, Ta, Da) and token-level text (B, Tt, Dt) attend to each
  other (cross-attention both ways), trained jointly, pooled -> (B, H); it is then late-fused
  like any other expert.

Fusion heads combine the experts that are present for a clip (`present` (B, E) bool): a
missing modality is masked out of the softmax, never fed as zeros the model could read as
a label.
- `AttentionFusion` (MERTools' baseline): a score per expert, softmax over the present
  experts (normalised: MERTools' attention weights are not), weighted sum, classifier.
- `MoEFusion` (MER2025 second place): a classification head per expert plus a fused head on
  the attention-pooled experts; a router weights all heads' logits (softmax over present
  heads); training adds an auxiliary cross-entropy over every head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

NEG = -1e9


@dataclass
class NetConfig:
    hidden: int = 64
    dropout: float = 0.3
    heads: int = 4
    layers: int = 1


class MLPExpert(nn.Module):
    def __init__(self, dim: int, cfg: NetConfig):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Dropout(cfg.dropout),
            nn.Linear(dim, cfg.hidden),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, cfg.hidden),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, H)
        return self.net(x)


class TemporalExpert(nn.Module):
    def __init__(self, dim: int, cfg: NetConfig):
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, cfg.hidden))
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.hidden))
        layer = nn.TransformerEncoderLayer(
            cfg.hidden, cfg.heads, 2 * cfg.hidden, cfg.dropout, batch_first=True, activation="gelu"
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), pad (B, T) True where padding -> (B, H) from the CLS token."""
        h = self.proj(x)  # (B, T, H)
        h = torch.cat([self.cls.expand(len(h), -1, -1), h], dim=1)  # (B, 1+T, H)
        pad = torch.cat([torch.zeros_like(pad[:, :1]), pad], dim=1)
        return self.encoder(h, src_key_padding_mask=pad)[:, 0]


def masked_mean(h: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    keep = (~pad).unsqueeze(-1).float()  # (B, T, 1)
    return (h * keep).sum(1) / keep.sum(1).clamp(min=1.0)


class AudioTextJoint(nn.Module):
    def __init__(self, audio_dim: int, text_dim: int, cfg: NetConfig):
        super().__init__()
        self.audio = nn.Sequential(nn.LayerNorm(audio_dim), nn.Linear(audio_dim, cfg.hidden))
        self.text = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, cfg.hidden))
        self.a2t = nn.MultiheadAttention(cfg.hidden, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.t2a = nn.MultiheadAttention(cfg.hidden, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.out = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(4 * cfg.hidden, cfg.hidden))

    def forward(
        self, audio: torch.Tensor, audio_pad: torch.Tensor, text: torch.Tensor, text_pad: torch.Tensor
    ) -> torch.Tensor:
        a, t = self.audio(audio), self.text(text)  # (B, Ta, H), (B, Tt, H)
        a_ctx, _ = self.a2t(a, t, t, key_padding_mask=text_pad)  # audio frames read the words
        t_ctx, _ = self.t2a(t, a, a, key_padding_mask=audio_pad)  # words read the audio
        pooled = [
            masked_mean(a, audio_pad),
            masked_mean(a_ctx, audio_pad),
            masked_mean(t, text_pad),
            masked_mean(t_ctx, text_pad),
        ]
        return self.out(torch.cat(pooled, dim=-1))  # (B, H)


class AttentionFusion(nn.Module):
    # Outputs only the fused logits (no per-expert heads: `FusionClassifier.output_heads`).
    expert_heads = False

    def __init__(self, n_experts: int, n_labels: int, cfg: NetConfig):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(cfg.hidden, cfg.hidden), nn.Tanh(), nn.Linear(cfg.hidden, 1))
        self.classifier = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, n_labels))

    def pool(self, h: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h (B, E, H), present (B, E) -> pooled (B, H), weights (B, E) summing to 1 over present."""
        scores = self.score(h).squeeze(-1).masked_fill(~present, NEG)
        weights = torch.softmax(scores, dim=-1) * present  # all-absent rows: zeros
        return (weights.unsqueeze(-1) * h).sum(1), weights

    def forward(self, h: torch.Tensor, present: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled, weights = self.pool(h, present)
        return {"logits": self.classifier(pooled), "weights": weights}


class MoEFusion(nn.Module):
    # Outputs every expert's logits and the attention-fused ones beside the routed mixture.
    expert_heads = True

    def __init__(self, n_experts: int, n_labels: int, cfg: NetConfig):
        super().__init__()
        self.attention = AttentionFusion(n_experts, n_labels, cfg)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, n_labels)) for _ in range(n_experts)
        )
        self.router = nn.Sequential(
            nn.Linear(n_experts * cfg.hidden + n_experts, cfg.hidden),
            nn.GELU(),
            nn.Linear(cfg.hidden, n_experts + 1),
        )

    def forward(self, h: torch.Tensor, present: torch.Tensor) -> dict[str, torch.Tensor]:
        b, e, _ = h.shape
        expert_logits = torch.stack([head(h[:, i]) for i, head in enumerate(self.heads)], dim=1)  # (B, E, L)
        fused = self.attention(h, present)["logits"]  # (B, L)
        all_logits = torch.cat([expert_logits, fused.unsqueeze(1)], dim=1)  # (B, E+1, L)
        available = torch.cat([present, torch.ones(b, 1, dtype=torch.bool, device=h.device)], dim=1)
        route_in = torch.cat([(h * present.unsqueeze(-1)).reshape(b, -1), present.float()], dim=-1)
        weights = torch.softmax(self.router(route_in).masked_fill(~available, NEG), dim=-1)  # (B, E+1)
        logits = (weights.unsqueeze(-1) * all_logits).sum(1)
        return {"logits": logits, "expert_logits": expert_logits, "fused_logits": fused, "weights": weights}


FUSIONS = {"attention": AttentionFusion, "moe": MoEFusion}
