"""The workspace: one folder holding the artifact store, the catalog and the run lock.

    <workspace>/artifacts/<run_id>/<stage>/<name>.parquet
    <workspace>/catalog.duckdb
    <workspace>/cache/features/<extractor key>/<part>.parquet   (kept across runs)
    <workspace>/run.lock        (held by the one pipeline process that may write)
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from storage.artifacts import ArtifactStore
from storage.catalog import Catalog, now
from storage.feature_cache import FeatureCache

ENV_VAR = "MERSEMI_WORKSPACE"
DEFAULT = "mersemi-workspace"


class WorkspaceBusy(RuntimeError):
    """Another process holds the workspace's run lock."""


def resolve(path: str | os.PathLike | None = None) -> Path:
    """The workspace folder: the argument, else $MERSEMI_WORKSPACE, else ./mersemi-workspace."""
    chosen = path or os.environ.get(ENV_VAR) or DEFAULT
    return Path(chosen).expanduser().resolve()


def new_run_id(command: str) -> str:
    """A sortable, unique run id such as ingest-20261122T021500Z-3fa9c1."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{command}-{stamp}-{secrets.token_hex(3)}"


class Workspace:
    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = resolve(root)
        self.artifacts = ArtifactStore(self.root / "artifacts")
        self.catalog = Catalog(self.root / "catalog.duckdb")
        self.feature_cache = FeatureCache(self.root / "cache" / "features")
        self.lock_path = self.root / "run.lock"

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    @contextmanager
    def exclusive(self, run_id: str) -> Iterator[None]:
        """Hold the run lock for one pipeline run; a second one is refused with who holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
                raise WorkspaceBusy(
                    f"workspace {self.root} is in use by another mersemi run ({holder or 'unknown'}); "
                    "wait for it to finish or use another --workspace"
                ) from None
            info = {"run_id": run_id, "pid": os.getpid(),
                    "since": datetime.now(UTC).isoformat(timespec="seconds")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
            try:
                # The lock holder is the catalog's one writer: it brings the schema up to date,
                # and any run still marked running lost its process.
                with self.catalog.writer() as s:
                    s.run("mark_interrupted_runs", run_id=run_id, now=now())
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
