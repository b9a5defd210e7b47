"""Feature extractors by name, and the default set (which needs no downloaded weights)."""

from __future__ import annotations

from models.extractors.au import FacialGeometry
from models.extractors.audio import AudioEgemaps, AudioHandcrafted, AudioHF
from models.extractors.base import ClipInput, Extractor, FeatureRow
from models.extractors.text import TextEncoder
from models.extractors.visual import VisualFace, VisualGlobal

EXTRACTORS: dict[str, type[Extractor]] = {
    cls.name: cls for cls in (VisualGlobal, VisualFace, FacialGeometry, AudioHandcrafted,
                              AudioEgemaps, AudioHF, TextEncoder)
}
DEFAULT_SET = ("visual_global", "visual_face", "au", "audio_handcrafted", "audio_egemaps", "text")


def build(name: str, params: dict | None = None) -> Extractor:
    """An extractor from its name and parameters; unknown names and parameters are errors."""
    if name not in EXTRACTORS:
        raise ValueError(f"unknown extractor {name!r}; choose from {', '.join(EXTRACTORS)}")
    try:
        return EXTRACTORS[name](**(params or {}))
    except TypeError as exc:
        raise ValueError(f"extractor {name}: {exc}") from None


__all__ = ["EXTRACTORS", "DEFAULT_SET", "build", "ClipInput", "Extractor", "FeatureRow"]
