"""Shared fixtures: a synthetic corpus, bad media, and the location of ../shared."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from storage.synthetic import make_corpus

# Under pytest-xdist every worker gets its own Prefect home (its embedded servers' SQLite
# database), so two workers' CLI runs never share one database file.
if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("PREFECT_HOME"):
    _home = Path(os.environ["PREFECT_HOME"]) / os.environ["PYTEST_XDIST_WORKER"]
    _home.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_HOME"] = str(_home)

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
