"""Fault injection for the crash tests: `MERSEMI_KILL_AT=<point>` makes the process SIGKILL
itself when it reaches that named point, exactly as a crash there would end it."""

from __future__ import annotations

import os
import signal


def checkpoint(point: str) -> None:
    if os.environ.get("MERSEMI_KILL_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)
