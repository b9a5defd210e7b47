"""Shared settings for Hugging Face models."""

from __future__ import annotations


def quiet_transformers() -> None:
    """No per-load progress bars or advisory warnings in pipeline logs."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
