"""Prompts and the response schema of the Gemini teacher.

The default label prompt follows the MER2025 second-place team's use of an MLLM as annotator:
score every label, then pick one, give a short reasoning and each modality's share of the
decision, as JSON constrained by a response schema. Prompts are configuration: any template
with `{labels}` and `{subtitle}` placeholders works, and its hash is part of the cache key.
"""

from __future__ import annotations

MODALITIES = ("video", "audio", "text")

LABEL_PROMPT = """\
You are an expert annotator of emotions in short video clips.
The clip shows one speaker. Use the facial expression and body language (video), the tone of
voice (audio) and what is said (subtitle) together.

Subtitle: "{subtitle}"

Candidate emotions: {labels}.

1. Give every candidate emotion a score between 0 and 1 for how well it describes the
   speaker's emotion in this clip (the scores should sum to about 1).
2. Choose the single best emotion from the candidates; answer with the label exactly as
   written above.
3. Explain your choice in at most two sentences, naming the cues you relied on.
4. Say how much each modality (video, audio, text) contributed to your choice, as shares
   that sum to 1.
Answer with JSON only.
"""

ENRICH_PROMPT = """\
You are helping an emotion recognition system that reads subtitles.
Rewrite the subtitle of this clip so that it also states the emotional cues you perceive in
the speaker's face, voice and words (for example: "(voice trembling, eyes downcast) I can't
believe she's gone."). Keep the original words; add the cues in brackets; one or two
sentences; no label names from this list: {labels}.

Subtitle: "{subtitle}"

Answer with the rewritten subtitle only.
"""


def label_schema(labels: tuple[str, ...]) -> dict:
    """The JSON response schema (OpenAPI subset accepted by Gemini) of the label prompt."""
    number = {"type": "NUMBER"}
    return {
        "type": "OBJECT",
        "properties": {
            "scores": {"type": "OBJECT", "properties": {x: number for x in labels},
                       "required": list(labels)},
            "label": {"type": "STRING", "enum": list(labels)},
            "reasoning": {"type": "STRING"},
            "modality_shares": {"type": "OBJECT", "properties": {m: number for m in MODALITIES},
                                "required": list(MODALITIES)},
        },
        "required": ["scores", "label", "reasoning", "modality_shares"],
        "propertyOrdering": ["scores", "label", "reasoning", "modality_shares"],
    }


def render(template: str, labels: tuple[str, ...], subtitle: str | None) -> str:
    """The prompt for one clip: the template with the label set and the subtitle filled in."""
    return template.replace("{labels}", ", ".join(labels)).replace(
        "{subtitle}", (subtitle or "").strip() or "(no subtitle)")
