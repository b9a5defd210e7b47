"""Shared fixtures: a synthetic corpus, bad media, and the location of ../shared."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from storage.synthetic import make_corpus

SHARED = Path(os.environ.get("MERSEMI_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared, skipping the test when it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not available (../shared is absent)")
    return path


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory) -> Path:
    """A small synthetic MER2025-layout corpus, made once per session (read-only use)."""
    out = tmp_path_factory.mktemp("synthetic") / "corpus"
    make_corpus(out, per_label_train=2, per_label_candidates=2)
    return out


@pytest.fixture
def corpus_copy(synthetic_corpus, tmp_path) -> Path:
    """A private copy of the synthetic corpus that a test may damage."""
    dest = tmp_path / "corpus"
    shutil.copytree(synthetic_corpus, dest)
    return dest
