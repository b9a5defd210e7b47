"""Label sets. The label set is configuration: MER2025's six labels are only the default."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

# MER2025 track 1 (MER-SEMI) discrete labels, in the challenge's order.
MER2025_LABELS: tuple[str, ...] = ("neutral", "angry", "happy", "sad", "worried", "surprise")


def normalize_label(raw: str) -> str:
    """Case-, width- and whitespace-insensitive form of a label as written in a CSV."""
    return unicodedata.normalize("NFKC", raw).strip().lower()


def parse_label_set(labels: str | Sequence[str]) -> tuple[str, ...]:
    """A validated label set from 'a,b,c' or a sequence: non-empty, unique, normalised."""
    items = labels.split(",") if isinstance(labels, str) else list(labels)
    out = tuple(normalize_label(x) for x in items if normalize_label(x))
    if len(out) < 2:
        raise ValueError(f"a label set needs at least two labels, got {list(out)}")
    dupes = sorted({x for x in out if out.count(x) > 1})
    if dupes:
        raise ValueError(f"label set lists {', '.join(dupes)} more than once")
    return out
