"""Fault injection for the crash tests (tests/flows/test_faults.py).

`MERSEMI_KILL_AT=<point>` makes the process SIGKILL itself when it reaches that named point,
exactly as a crash (or a power cut) there would end it: no `finally`, no `atexit`, no flush.
`MERSEMI_HOLD_AT=<point>` with `MERSEMI_HOLD_FILE=<path>` makes it create that file at the
point and wait there while the file exists (at most an hour): a run held with the workspace
lock, for the test of two pipelines on one workspace.

The points, all in the flow's process (a worker process's death fails only its shard):

    ingest:registry-saved       the registry artifact is saved, not yet recorded
    features:shard-<n>:cached   the n-th finished shard's rows are in the feature cache
    features:assembled          every extractor's artifact is saved, none recorded
    features:recorded           the feature sets are recorded
    teacher:label:asked         every label answer is recorded (in batches as they came);
                                the outcomes, the artifacts and the run's end are not
    mine:round-<r>:trained      round r's models and predictions are saved; its decisions
                                are not recorded
    finalize:trained            the second stage is trained, its models saved
    finalize:saved              the final predictions and the submission are saved, not
                                yet recorded
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

HOLD_LIMIT_S = 3600.0


def checkpoint(point: str) -> None:
    if os.environ.get("MERSEMI_KILL_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("MERSEMI_HOLD_AT") == point and os.environ.get("MERSEMI_HOLD_FILE"):
        hold(Path(os.environ["MERSEMI_HOLD_FILE"]))


def hold(flag: Path) -> None:
    """Say we are here (create `flag`), then wait until someone removes it."""
    flag.write_text(f"{os.getpid()}\n")
    deadline = time.monotonic() + HOLD_LIMIT_S
    while flag.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
