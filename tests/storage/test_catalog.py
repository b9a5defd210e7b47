"""The DuckDB catalog: migrations, short-lived writers, waiting readers, invariant checks."""

from __future__ import annotations

import fcntl
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from storage.catalog import (
    ROW_GROUP_SIZE,
    SCHEMA_VERSION,
    Catalog,
    CatalogError,
    check_names,
    migrations,
    now,
)

TABLES = {"runs", "stages", "artifacts", "artifact_inputs", "datasets", "clips", "media_files",
          "clip_decisions", "teacher_answers", "metrics", "schema_migrations"}


def test_first_writer_creates_every_table_at_the_current_version(tmp_path):
    cat = Catalog(tmp_path / "c.duckdb")
    with cat.writer():
        pass
    with cat.reader() as s:
        tables = set(s.query("SELECT table_name FROM information_schema.tables")["table_name"])
        applied = s.query("SELECT version, name FROM schema_migrations")
    assert tables >= TABLES
    assert applied["version"].tolist() == list(range(1, SCHEMA_VERSION + 1))
    assert applied["name"].tolist() == [name for _, name, _ in migrations()]


def test_migrations_apply_once(tmp_path):
    cat = Catalog(tmp_path / "c.duckdb")
    for _ in range(3):
        with cat.writer():
            pass
    with cat.reader() as s:
        assert s.query("SELECT count(*) AS n FROM schema_migrations")["n"][0] == SCHEMA_VERSION


def test_reader_refuses_missing_and_newer_catalogs(tmp_path):
    with pytest.raises(CatalogError, match="no catalog at"), Catalog(tmp_path / "none.duckdb").reader():
        pass
    cat = Catalog(tmp_path / "c.duckdb")
    with cat.writer() as s:
        s.query("INSERT INTO schema_migrations VALUES (99, '0099_future.sql', now())")
    with pytest.raises(CatalogError, match="newer than this mersemi|upgrade mersemi"), cat.reader():
        pass
    with pytest.raises(CatalogError, match="upgrade mersemi"), cat.writer():
        pass


def test_writer_rolls_back_when_the_block_raises(tmp_path):
    cat = Catalog(tmp_path / "c.duckdb")
    with pytest.raises(RuntimeError), cat.writer() as s:
        s.run("insert_run", run_id="r1", command="ingest", started_at=now(), params={},
              code_version="x", flow_run_id=None, cache_key=None)
        raise RuntimeError("crash half-way")
    with cat.reader() as s:
        assert s.frame("list_runs", limit=10).empty


def _hold_writer(path: str, seconds: float, ready) -> None:
    con = duckdb.connect(path)
    ready.set()
    time.sleep(seconds)
    con.close()


@contextmanager
def _held_by_a_tool(cat: Catalog, seconds: float) -> Iterator[None]:
    """The catalog made, then held read-write for `seconds` by another process that does not
    know the session lock (DuckDB's own lock only)."""
    with cat.writer():
        pass
    ready = mp.Event()
    holder = mp.Process(target=_hold_writer, args=(str(cat.path), seconds, ready))
    holder.start()
    try:
        assert ready.wait(10)
        yield
    finally:
        holder.kill()
        holder.join()


def test_reader_waits_for_a_writer_then_reads(tmp_path):
    cat = Catalog(tmp_path / "c.duckdb", lock_timeout_s=20)
    with _held_by_a_tool(cat, 1.5):
        t0 = time.monotonic()
        with cat.reader() as s:
            assert s.frame("list_runs", limit=1).empty
        assert time.monotonic() - t0 > 0.5               # it did wait for the lock


def test_reader_gives_up_with_a_clear_message(tmp_path):
    cat = Catalog(tmp_path / "c.duckdb", lock_timeout_s=0.3)
    with _held_by_a_tool(cat, 3), \
            pytest.raises(CatalogError, match="stayed locked by another process"), cat.reader():
        pass


def test_the_session_lock_and_duckdbs_lock_share_one_timeout(tmp_path):
    # A session that waited most of its time for the session lock has only the rest of it for
    # DuckDB's own lock (held by a tool that does not know the session lock), not another
    # lock_timeout_s: it gives up after ~2 s, not ~4.
    cat = Catalog(tmp_path / "c.duckdb", lock_timeout_s=2.0)
    with _held_by_a_tool(cat, 10):
        fd = os.open(cat.lock_path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            threading.Timer(1.6, fcntl.flock, (fd, fcntl.LOCK_UN)).start()
            t0 = time.monotonic()
            with pytest.raises(CatalogError, match="stayed locked by another process for 2 s"), cat.reader():
                pass
            waited = time.monotonic() - t0
            assert 1.6 <= waited < 3.0, waited
        finally:
            os.close(fd)


TRY_WRITER = """
import sys
from storage.catalog import Catalog, CatalogError
try:
    with Catalog(sys.argv[1], lock_timeout_s=0.5).writer() as s:
        s.query("SELECT 1")
    print("wrote")
except CatalogError as exc:
    print("refused:", exc)
"""


def _try_writer(path: Path) -> str:
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", TRY_WRITER, str(path)], cwd=repo, capture_output=True,
                          env={**os.environ, "PYTHONPATH": str(repo)}, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_reader_keeps_writers_out_when_its_process_closes_another_descriptor_of_the_file(tmp_path):
    # DuckDB's own lock is a POSIX record lock: a process drops it when it closes any descriptor
    # of the file (DuckDB itself opens the file more than once). The session lock must hold.
    cat = Catalog(tmp_path / "c.duckdb")
    with cat.writer():
        pass
    with cat.reader() as s:
        cat.path.open("rb").close()
        assert _try_writer(cat.path).startswith("refused: catalog")
        assert s.frame("list_runs", limit=1).empty
    assert _try_writer(cat.path) == "wrote\n"


def test_a_waiting_writer_goes_ahead_of_readers_that_come_after_it(tmp_path):
    cat = Catalog(tmp_path / "c.duckdb", lock_timeout_s=20)
    with cat.writer():
        pass
    order = []
    with cat.reader():
        writer = threading.Thread(target=_write_and_note, args=(cat, order))
        writer.start()
        deadline = time.monotonic() + 10
        while not _queued(cat) and time.monotonic() < deadline:
            time.sleep(0.01)
        reader = threading.Thread(target=_read_and_note, args=(cat, order))
        reader.start()
        time.sleep(0.3)
        assert order == []                       # the writer waits for the reader already in
    writer.join(10)
    reader.join(10)
    assert order == ["wrote", "read"]


def _queued(cat: Catalog) -> bool:
    fd = os.open(cat.queue_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _write_and_note(cat: Catalog, order: list) -> None:
    with cat.writer():
        time.sleep(0.2)
    order.append("wrote")


def _read_and_note(cat: Catalog, order: list) -> None:
    with cat.reader():
        pass
    order.append("read")


def test_checks_pass_on_a_sound_catalog_and_catch_violations(tmp_path):
    cat = Catalog(tmp_path / "c.duckdb")
    with cat.writer():
        pass
    assert cat.failed_checks() == {}
    assert "no_accepted_clip_without_reason" in check_names()
    with cat.writer() as s:
        # A decision written by hand: no reason, and not counted in round_counts.
        s.query("INSERT INTO clip_decisions VALUES ('r', 1, 'c1', 'accepted', 'happy', 0.9, "
                "'  ', NULL, 'vote', now(), NULL)")
        # The same clip decided twice in the round: no key refuses it (schema v9), the check finds it.
        s.query("INSERT INTO clip_decisions VALUES ('r', 1, 'c1', 'rejected', 'sad', 0.2, "
                "'vote: tie', NULL, 'vote', now(), NULL)")
        s.query("INSERT INTO teacher_outcomes VALUES ('t', 'c1', 'label', 'replay', 'k', 'answered', "
                "false, 1), ('t', 'c1', 'label', 'replay', 'k', 'failed', false, 3)")
        s.query("INSERT INTO clips (clip_id, dataset, name, split, has_video, has_audio, "
                "has_text, status, reason, first_seen_run, last_changed_run) VALUES "
                "('c2', 'ghost', 'x', 'train', true, true, true, 'error', NULL, 'r', 'r')")
    failed = cat.failed_checks()
    assert set(failed) == {"no_accepted_clip_without_reason", "no_bad_clip_without_reason",
                           "clips_belong_to_a_dataset", "round_counts_match_decisions",
                           "one_decision_per_clip_per_round", "one_outcome_per_clip_per_question"}
    assert failed["no_accepted_clip_without_reason"]["clip_id"].tolist() == ["c1"]
    assert failed["one_decision_per_clip_per_round"][["clip_id", "n"]].values.tolist() == [["c1", 2]]
    assert failed["one_outcome_per_clip_per_question"][["clip_id", "n"]].values.tolist() == [["c1", 2]]


def test_writer_writes_row_groups_of_row_group_size(tmp_path):
    """A write transaction's rows go to the file a row group of ROW_GROUP_SIZE at a time, not in
    DuckDB's default 122,880 (which held a round's decisions in memory until the commit)."""
    cat = Catalog(tmp_path / "c.duckdb")
    n = 3 * ROW_GROUP_SIZE
    with cat.writer() as s:
        s.query("INSERT INTO round_counts SELECT 'r', 1, 'happy', 'accepted', 'accepted', i "
                "FROM range(?) t(i)", [n])
    with cat.reader() as s:
        groups = s.query("SELECT count(DISTINCT row_group_id) AS n FROM pragma_storage_info('round_counts')")
        rows = s.query("SELECT count(*) AS n, sum(n) AS total FROM round_counts")
    assert groups["n"][0] == 3
    assert rows["n"][0] == n and rows["total"][0] == n * (n - 1) // 2


def _constraints(s, table: str) -> set[str]:
    return set(s.query("SELECT constraint_type FROM duckdb_constraints() WHERE table_name = ?",
                       [table])["constraint_type"])


def _per_clip_rows(s, write: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The decisions and teacher outcomes of two runs each (written first with `write`), read
    back in one order: what a migration of the per-clip tables must keep."""
    if write:
        s.query("INSERT INTO clip_decisions SELECT 'mine-' || (i % 2), 1 + i // 1000, 'c' || i, "
                "'accepted', 'happy', i / 3000, 'consensus', '{\"teacher\": {\"label\": \"happy\"}}', "
                "'consensus-v2', TIMESTAMP '2026-12-01', i % 3 = 0 FROM range(3000) t(i)")
        s.query("INSERT INTO teacher_outcomes SELECT 'teacher-' || (i % 2), 'c' || i, "
                "CASE WHEN i % 5 = 0 THEN 'enrich' ELSE 'label' END, 'replay', 'k' || i, 'answered', "
                "i % 7 = 0, 1 + i % 3 FROM range(2000) t(i)")
    return (s.query("SELECT * FROM clip_decisions ORDER BY run_id, round, clip_id"),
            s.query("SELECT * FROM teacher_outcomes ORDER BY run_id, question, clip_id"))


def test_v9_keeps_every_decision_and_outcome_and_drops_only_the_primary_keys(tmp_path, monkeypatch):
    cat = Catalog(tmp_path / "c.duckdb")
    every = migrations()
    monkeypatch.setattr("storage.catalog.migrations", lambda: every[:8])
    with cat.writer() as s:
        assert "PRIMARY KEY" in _constraints(s, "clip_decisions") & _constraints(s, "teacher_outcomes")
        before, outcomes = _per_clip_rows(s, write=True)
    monkeypatch.setattr("storage.catalog.migrations", lambda: every[:9])
    with cat.writer() as s:
        after, outcomes_after = _per_clip_rows(s)
        assert _constraints(s, "clip_decisions") == _constraints(s, "teacher_outcomes") == {"NOT NULL"}
        indexes = _indexes(s)
        version = cat.version(s.con)
    assert version == 9
    assert indexes == [["clip_decisions", "clip_decisions_clip_id"],
                       ["teacher_outcomes", "teacher_outcomes_clip_id"]]
    pd.testing.assert_frame_equal(after, before)
    pd.testing.assert_frame_equal(outcomes_after, outcomes)


def _indexes(s) -> list[list[str]]:
    return s.query("SELECT table_name, index_name FROM duckdb_indexes() "
                   "WHERE table_name IN ('clip_decisions', 'teacher_outcomes') ORDER BY 1").values.tolist()


def test_v11_keeps_every_decision_and_outcome_and_drops_their_clip_id_indexes(tmp_path, monkeypatch):
    """Committing rows into an index loads it whole (a round's commit grew with every decision
    the catalog held): v11 drops the clip_id indexes of the two tables written a row per clip."""
    cat = Catalog(tmp_path / "c.duckdb")
    every = migrations()
    monkeypatch.setattr("storage.catalog.migrations", lambda: every[:10])
    with cat.writer() as s:
        before, outcomes = _per_clip_rows(s, write=True)
        assert len(_indexes(s)) == 2
    monkeypatch.setattr("storage.catalog.migrations", lambda: every)
    with cat.writer():
        pass
    with cat.reader() as s:
        assert cat.version(s.con) == SCHEMA_VERSION and _indexes(s) == []
        after, outcomes_after = _per_clip_rows(s)
        pd.testing.assert_frame_equal(after, before)
        pd.testing.assert_frame_equal(outcomes_after, outcomes)
        # The clips table keeps its index on name (one row per clip, upserted by ingest).
        assert s.query("SELECT index_name FROM duckdb_indexes()")["index_name"].tolist() == ["clips_name"]


def test_parameters_are_bound_not_pasted(tmp_path):
    cat = Catalog(tmp_path / "c.duckdb")
    with cat.writer() as s:
        s.run("insert_run", run_id="x'); DROP TABLE runs; --", command="ingest",
              started_at=now(), params={"a": 1}, code_version="v", flow_run_id=None, cache_key=None)
    with cat.reader() as s:
        runs = s.frame("list_runs", limit=5)
    assert runs["run_id"].tolist() == ["x'); DROP TABLE runs; --"]


def test_a_memory_bounded_write_keeps_duckdbs_buffers_under_the_limit(tmp_path):
    """Unbounded, DuckDB keeps the blocks a transaction wrote until the session closes (a
    round's decisions grew with the pool); a writer with a memory limit evicts them past it, and
    spills beside the file; the next session has DuckDB's default again."""
    insert = ("INSERT INTO round_counts SELECT 'r', 1, md5(i::VARCHAR) || md5((i + 1)::VARCHAR) || "
              "md5((i + 2)::VARCHAR), 'accepted', 'accepted', i FROM range(500000) t(i)")
    held = "SELECT sum(memory_usage_bytes) / 2 ** 20 AS mb FROM duckdb_memory()"
    setting = "SELECT current_setting('memory_limit') AS m, current_setting('temp_directory') AS t"
    unbounded = Catalog(tmp_path / "a.duckdb")
    with unbounded.writer() as s:
        default = s.query(setting)["m"][0]
        s.query(insert)
        assert s.query(held)["mb"][0] > 24                   # ~29 MB of the 48 MB inserted
    bounded = Catalog(tmp_path / "b.duckdb")
    with bounded.writer(memory_limit="16MB") as s:
        limit, spill = s.query(setting).values[0]
        s.query(insert)
        assert s.query(held)["mb"][0] <= 16
    with bounded.writer() as s:
        assert s.query(setting)["m"][0] == default
    assert limit != default and spill == f"{tmp_path / 'b.duckdb'}.tmp"    # spills beside the file
    with bounded.reader() as s:
        assert s.query("SELECT count(*) AS n FROM round_counts")["n"][0] == 500000
