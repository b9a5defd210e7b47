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


def test_an_answer_replaces_its_keys_cached_row_and_a_batch_keeps_one_row_per_key(tmp_path):
    """Schema v10: no key index refuses a second row; the writer deletes the key's row and
    inserts the new one, and of a key twice in one batch keeps the later."""
    ws = Workspace(tmp_path / "ws")
    failed = answers({"clip-00": "happy", "clip-01": "sad"}, "a").assign(status="failed", label=None)
    record_answers(ws.catalog, failed)
    again = answers({"clip-00": "angry", "clip-02": "happy"}, "a")
    twice = pd.concat([answers({"clip-02": "sad"}, "a"), again], ignore_index=True)
    record_answers(ws.catalog, twice)
    with ws.catalog.reader() as s:
        rows = s.query("SELECT cache_key, status, coalesce(label, '-') FROM teacher_answers "
                       "ORDER BY cache_key")
    assert rows.values.tolist() == [["a-clip-00", "answered", "angry"], ["a-clip-01", "failed", "-"],
                                    ["a-clip-02", "answered", "happy"]]
    assert ws.catalog.failed_checks() == {}
    # A second row that got in by another way than the writer is found by the check.
    with ws.catalog.writer() as s:
        s.query("INSERT INTO teacher_answers SELECT * FROM teacher_answers WHERE cache_key = 'a-clip-01'")
    found = ws.catalog.failed_checks()["one_answer_per_cache_key"]
    assert found[["cache_key", "n"]].values.tolist() == [["a-clip-01", 2]]


def test_v10_keeps_every_cached_answer_and_drops_the_caches_indexes(tmp_path, monkeypatch):
    from storage.catalog import SCHEMA_VERSION, Catalog, migrations

    cat = Catalog(tmp_path / "c.duckdb")
    every = migrations()
    monkeypatch.setattr("storage.catalog.migrations", lambda: every[:9])
    record_answers(cat, answers({c: "happy" for c in CLIPS}, "a"))
    with cat.writer() as s:                 # a v9 catalog: this mersemi reads v10 only
        before = s.query("SELECT * FROM teacher_answers ORDER BY cache_key")
        indexes = "SELECT count(*) AS n FROM duckdb_indexes() WHERE table_name = 'teacher_answers'"
        assert s.query(indexes)["n"][0] == 1
    monkeypatch.setattr("storage.catalog.migrations", lambda: every)
    with cat.writer():
        pass
    with cat.reader() as s:
        after = s.query("SELECT * FROM teacher_answers ORDER BY cache_key")
        constraints = set(s.query("SELECT constraint_type FROM duckdb_constraints() "
                                  "WHERE table_name = 'teacher_answers'")["constraint_type"])
        left = s.query(indexes)["n"][0]
        assert cat.version(s.con) == SCHEMA_VERSION
    assert constraints == {"NOT NULL"} and left == 0
    pd.testing.assert_frame_equal(after, before)
