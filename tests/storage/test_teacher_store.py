"""A teacher run's content digest (storage.teacher_store.answers_digest), part of the mining and
finalize runs' content keys."""

from __future__ import annotations

import json
from datetime import datetime

import pandas as pd

from storage import teacher_store
from storage.records import start_run
from storage.teacher_store import ANSWER_COLUMNS, answers_digest, record_answers, record_teacher_run
from storage.workspace import Workspace

T0 = datetime(2026, 1, 1, 12, 0, 0)
CLIPS = [f"clip-{i:02d}" for i in range(25)]


def answers(labels: dict[str, str], teacher: str) -> pd.DataFrame:
    rows = [{k: None for k in ANSWER_COLUMNS} | {
        "cache_key": f"{teacher}-{c}", "clip_id": c, "teacher": teacher, "model": "m", "question": "label",
        "status": "answered", "label": lab, "scores": json.dumps({lab: 0.8}), "reasoning": f"why {teacher}",
        "raw_text": "{}", "run_id": teacher} for c, lab in labels.items()]
    return pd.DataFrame(rows)


def teacher_run(ws: Workspace, run_id: str, labels: dict[str, str], teacher: str, attempts: int) -> None:
    """A teacher run whose answers (cache keys `<teacher>-<clip>`) say `labels`."""
    record_answers(ws.catalog, answers(labels, teacher))
    start_run(ws.catalog, run_id, "teacher", {})
    outcomes = pd.DataFrame({"clip_id": list(labels), "question": "label", "teacher": teacher,
                             "cache_key": [f"{teacher}-{c}" for c in labels], "outcome": "answered",
                             "from_cache": attempts == 0, "attempts": attempts})
    record_teacher_run(ws.catalog, run_id, T0, [outcomes], [], {"pool": len(labels)})


def test_the_digest_is_what_was_answered_read_a_batch_at_a_time(tmp_path, monkeypatch):
    ws = Workspace(tmp_path / "ws")
    said = {c: ("happy" if i % 3 else "sad") for i, c in enumerate(CLIPS)}
    # Two runs that got the same answers, one from the cache with other reasoning: one digest.
    teacher_run(ws, "teacher-1", said, "a", attempts=1)
    teacher_run(ws, "teacher-2", said, "b", attempts=0)
    # A third whose answer for one clip differs.
    teacher_run(ws, "teacher-3", said | {CLIPS[7]: "angry"}, "c", attempts=1)
    whole = {run: answers_digest(ws.catalog, run) for run in ("teacher-1", "teacher-2", "teacher-3")}
    assert whole["teacher-1"] == whole["teacher-2"] != whole["teacher-3"]
    # The batches' size changes nothing (here 25 rows in batches of 4).
    monkeypatch.setattr(teacher_store, "DIGEST_ROWS", 4)
    assert {run: answers_digest(ws.catalog, run) for run in whole} == whole
