"""The DuckDB catalog: runs, stages, artifacts and their lineage, clips, decisions, teacher
answers and metrics.

One writer at a time. DuckDB lets no other process open a file while one holds it
read-write (not even read-only), so the flow process opens the catalog only for the length of
one write transaction (`Catalog.writer()`), and audit readers (`Catalog.reader()`) wait for
that lock with a bounded back-off instead of failing. Tasks never open the catalog: they
return data and the flow records it.

DuckDB's own lock is a POSIX record lock, which a process loses when it closes *any*
descriptor of the file, and which DuckDB takes only after it has opened the file twice
without one (strace of a read-only connect). So
every session first takes `catalog.duckdb.lock` (flock: shared for a reader, exclusive for the
writer, held until DuckDB has closed the file), queueing a writer ahead of new readers through
`catalog.duckdb.queue`; DuckDB's lock still keeps out other tools.

The schema lives in `storage/sql/migrations/` (one file per version, applied in order);
queries live in `storage/sql/<name>.sql`, one per file, and take bound parameters only.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pandas as pd
import pyarrow as pa

MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class CatalogError(RuntimeError):
    """The catalog cannot be used as asked (busy, wrong schema version, missing)."""


@cache
def sql(name: str) -> str:
    """The text of the query `storage/sql/<name>.sql`."""
    return resources.files("storage").joinpath("sql", f"{name}.sql").read_text("utf-8")


@cache
def migrations() -> tuple[tuple[int, str, str], ...]:
    """(version, file name, SQL) of every migration, in order."""
    folder = resources.files("storage").joinpath("sql", "migrations")
    found = []
    for entry in folder.iterdir():
        match = MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if versions != list(range(1, len(found) + 1)):
        raise CatalogError(f"migrations must be numbered 0001, 0002, ... without gaps: {versions}")
    return tuple(found)


SCHEMA_VERSION = len(migrations())


def check_names() -> list[str]:
    """Names of the invariant queries (`storage/sql/checks/*.sql`): each must return no row."""
    folder = resources.files("storage").joinpath("sql", "checks")
    return sorted(e.name[:-4] for e in folder.iterdir() if e.name.endswith(".sql"))


def now() -> datetime:
    """Naive UTC timestamp, as stored in the catalog's TIMESTAMP columns."""
    return datetime.now(UTC).replace(tzinfo=None)


# Rows of one row group. A write transaction holds its new rows in memory until a row group is
# full, then writes it to the file; at DuckDB's default (122,880) a round's 100,000 decisions
# were all held until the commit, and its insert cost grew with the pool (docs/scale.md).
ROW_GROUP_SIZE = 16_384
# What DuckDB may hold in a transaction that records a row per pool clip (`Catalog.writer(
# memory_limit=)`: a round's decisions, a teacher run's outcomes). Unbounded,
# it keeps every block it wrote until the session closes: a round of 100,000 decisions peaked
# +95 MB, of 1,000,000 +236; bounded, +38 and +71 (its written blocks are evicted; an aggregate
# past it spills to `<catalog>.tmp`).
WRITE_MEMORY_LIMIT = "64MB"


def _is_lock_error(exc: Exception) -> bool:
    return "lock" in str(exc).lower()


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back the open transaction, if there still is one: a failed statement or COMMIT may
    have ended it already, and that error, not this one, is the one to report."""
    with suppress(duckdb.Error):
        con.execute("ROLLBACK")


@dataclass
class Session:
    """One open connection: named queries with bound parameters, and registered frames."""

    con: duckdb.DuckDBPyConnection | None

    def close(self) -> None:
        """Close the connection and drop it, so that a traceback keeping this session alive
        (the CLI's error path, Prefect's failed states) does not keep a connection alive too."""
        if self.con is not None:
            self.con.close()
            self.con = None

    def run(self, query: str, /, **params: Any) -> duckdb.DuckDBPyConnection:
        """Execute the named query `storage/sql/<query>.sql` with bound parameters."""
        return self.con.execute(sql(query), _bind(params))

    def frame(self, query: str, /, **params: Any) -> pd.DataFrame:
        return self.run(query, **params).df()

    def batches(self, query: str, rows: int, /, **params: Any) -> pa.RecordBatchReader:
        """The named query's rows as Arrow record batches of about `rows` rows, fetched as they
        are read (not the whole result first, as `run(...)` would)."""
        return self.con.sql(sql(query), params=_bind(params)).to_arrow_reader(rows)

    def records(self, query: str, /, **params: Any) -> list[dict]:
        """A named query's rows as JSON-ready dicts (timestamps as ISO text, NULL as None)."""
        return json.loads(self.frame(query, **params).to_json(orient="records", date_format="iso"))

    def query(self, text: str, params: list | Mapping | None = None) -> pd.DataFrame:
        """An ad-hoc query (audit console, tests); parameters are bound, never pasted."""
        return self.con.execute(text, params or []).df()

    def register(self, name: str, frame: Any) -> None:
        """Register a frame, an Arrow table or an Arrow dataset (read as it is scanned) as a
        relation the named queries read."""
        self.con.register(name, frame)

    def unregister(self, name: str) -> None:
        self.con.unregister(name)


def _bind(params: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-encode dicts and lists so they land in JSON columns as JSON text."""
    return {k: json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v
            for k, v in params.items()}


T = TypeVar("T")


class _Busy(Exception):
    """A lock is held by someone else: try again (`_backoff`)."""


def _backoff(attempt: Callable[[], T], deadline: float, first_delay: float, max_delay: float) -> T:
    """`attempt()` until it returns. While it raises `_Busy`, wait and try again, the waits
    doubling from `first_delay` to `max_delay` and never reaching past `deadline`
    (time.monotonic()); past it, the last `_Busy` is raised. Other errors end it at once."""
    delay = first_delay
    while True:
        try:
            return attempt()
        except _Busy:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            time.sleep(min(delay, left))
            delay = min(delay * 2, max_delay)


class Catalog:
    """The workspace's catalog file. Cheap to construct; connections are short-lived."""

    def __init__(self, path: str | Path, lock_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.queue_path = self.path.with_name(self.path.name + ".queue")
        self.lock_timeout_s = lock_timeout_s

    def __repr__(self) -> str:
        return f"Catalog({str(self.path)!r})"

    @contextmanager
    def _session(self, read_only: bool) -> Iterator[Session]:
        """A connection inside the session lock, which is released only once DuckDB has closed
        the file. Waiting for the lock and for DuckDB's own lock share one deadline: a session
        waits at most `lock_timeout_s` in all."""
        deadline = time.monotonic() + self.lock_timeout_s
        with self._locked(read_only, deadline):
            session = Session(self._connect(read_only, deadline))
            try:
                yield session
            finally:
                session.close()

    @contextmanager
    def _locked(self, shared: bool, deadline: float) -> Iterator[None]:
        """Shared (a reader) or exclusive (the writer) hold of the catalog's session lock.

        A writer first takes the queue lock and keeps it: readers pass the queue lock only to
        take the session lock, so a writer waits for the readers already in, not for a stream of
        new ones."""
        with self._lock_file(self.queue_path, shared) as queue, \
                self._lock_file(self.lock_path, shared) as held:
            if queue is None or held is None:
                yield
                return
            mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
            self._wait(queue, mode, deadline)
            try:
                self._wait(held, mode, deadline)
                if shared:
                    fcntl.flock(queue, fcntl.LOCK_UN)
                try:
                    yield
                finally:
                    fcntl.flock(held, fcntl.LOCK_UN)
            finally:
                fcntl.flock(queue, fcntl.LOCK_UN)

    @contextmanager
    def _lock_file(self, path: Path, shared: bool) -> Iterator[int | None]:
        """A descriptor of a lock file; None for a reader of a folder it cannot write that has
        no lock file (read-only media with no writer: DuckDB's lock is enough there)."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if not shared or exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise CatalogError(f"cannot open the catalog's lock file {path}: {exc}") from exc
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                yield None
                return
        try:
            yield fd
        finally:
            # Unlocking is explicit (above) before this close: a process forked meanwhile shares
            # the descriptor, and its copy must not keep the lock.
            os.close(fd)

    def _wait(self, fd: int, mode: int, deadline: float) -> None:
        def take() -> None:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise _Busy from exc

        try:
            _backoff(take, deadline, first_delay=0.002, max_delay=0.02)
        except _Busy:
            raise CatalogError(f"catalog {self.path} stayed locked by another process or thread for "
                               f"{self.lock_timeout_s:.0f} s") from None

    def _connect(self, read_only: bool, deadline: float) -> duckdb.DuckDBPyConnection:
        """A connection once DuckDB's own lock lets one in (a tool that does not know the session
        lock may hold it)."""
        def attempt() -> duckdb.DuckDBPyConnection:
            try:
                return self._open(read_only)
            except duckdb.Error as exc:
                if _is_lock_error(exc):
                    raise _Busy(str(exc)) from exc
                raise CatalogError(f"cannot open catalog {self.path}: {exc}") from exc

        try:
            return _backoff(attempt, deadline, first_delay=0.05, max_delay=1.0)
        except _Busy as exc:
            raise CatalogError(f"catalog {self.path} stayed locked by another process for "
                               f"{self.lock_timeout_s:.0f} s: {exc}") from exc.__cause__

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        if read_only:
            return duckdb.connect(str(self.path), read_only=True)
        # The writer attaches the file: the one way to give DuckDB a row group size.
        con = duckdb.connect()
        try:
            path = str(self.path).replace("'", "''")
            con.execute(f"ATTACH '{path}' AS catalog (ROW_GROUP_SIZE {ROW_GROUP_SIZE})")
            con.execute("USE catalog")
            # Beside the file, not in the working directory (an in-memory connection's default):
            # what a memory-bounded write spills (`writer(memory_limit=)`).
            con.execute(f"SET temp_directory = '{path}.tmp'")
        except BaseException:
            con.close()
            raise
        return con

    def version(self, con: duckdb.DuckDBPyConnection) -> int:
        # One direct query (information_schema costs more than the audit's own queries). Read to
        # the end: `fetchone()` leaves the result open, and the connection then refuses to
        # register a relation ("unfinished result").
        try:
            return con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchall()[0][0]
        except duckdb.CatalogException:                 # a new, empty catalog
            return 0

    def _migrate(self, con: duckdb.DuckDBPyConnection) -> None:
        current = self.version(con)
        if current > SCHEMA_VERSION:
            raise CatalogError(
                f"catalog {self.path} has schema v{current}, newer than this mersemi "
                f"(v{SCHEMA_VERSION}): upgrade mersemi"
            )
        for version, name, text in migrations()[current:]:
            con.execute("BEGIN")
            try:
                if version == 1:
                    con.execute(
                        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                        "name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
                    )
                con.execute(text)
                con.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)", [version, name, now()]
                )
                con.execute("COMMIT")
            except Exception:
                _rollback(con)
                raise

    @contextmanager
    def writer(self, memory_limit: str | None = None) -> Iterator[Session]:
        """A write transaction: committed when the block ends, rolled back if it raises.

        A write the disk refuses (full, over quota), in the block or at the commit, rolls the
        whole transaction back and raises CatalogError naming the file: the catalog stays as it
        was before the transaction.

        `memory_limit` (e.g. WRITE_MEMORY_LIMIT) bounds DuckDB's memory from the first statement
        to the commit: the blocks the transaction wrote are evicted past it (and an aggregate
        spills beside the file) instead of staying in memory until the session closes. Only for
        transactions that commit into no large index: DuckDB loads an index whole to commit
        into it, and a commit that needs more than the limit fails."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._session(read_only=False) as session:
            self._migrate(session.con)
            if memory_limit is not None:
                session.con.execute(f"SET memory_limit = '{memory_limit}'")
            session.con.execute("BEGIN")
            try:
                yield session
            except duckdb.IOException as exc:
                _rollback(session.con)
                raise self._write_failed(exc) from exc
            except BaseException:
                _rollback(session.con)
                raise
            try:
                session.con.execute("COMMIT")
            except duckdb.Error as exc:
                # A failed COMMIT (the write-ahead log could not be written) has already ended
                # the transaction: rolling back again would hide this error behind "no
                # transaction is active".
                _rollback(session.con)
                raise self._write_failed(exc) from exc

    def _write_failed(self, exc: Exception) -> CatalogError:
        return CatalogError(f"could not write the catalog {self.path}: {exc}; the transaction was "
                            "rolled back and the catalog holds what it held before it")

    def migrate(self) -> int:
        """Bring the catalog to this mersemi's schema version (the writer's first step)."""
        with self.writer():
            pass
        return SCHEMA_VERSION

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A read-only connection; refuses a catalog of another schema version."""
        if not self.path.exists():
            raise CatalogError(f"no catalog at {self.path}: run `mersemi ingest` first")
        with self._session(read_only=True) as session:
            version = self.version(session.con)
            if version != SCHEMA_VERSION:
                raise CatalogError(
                    f"catalog {self.path} has schema v{version}, this mersemi reads "
                    f"v{SCHEMA_VERSION}: "
                    + ("run any writing command to migrate it" if version < SCHEMA_VERSION
                       else "upgrade mersemi")
                )
            yield session

    def failed_checks(self) -> dict[str, pd.DataFrame]:
        """Invariant queries that returned rows (an empty dict means the catalog is sound)."""
        with self.reader() as s:
            out = {name: s.frame(f"checks/{name}") for name in check_names()}
        return {name: rows for name, rows in out.items() if len(rows)}
