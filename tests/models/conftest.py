from __future__ import annotations

import pytest

from tests.models.fake_gemini import FakeGeminiServer

KEY = "AIzaFAKE-test-key-0123456789-do-not-leak"


@pytest.fixture
def fake_gemini():
    """A running fake Gemini server; its `script` and `requests` drive and record a test."""
    with FakeGeminiServer() as fake:
        yield fake
