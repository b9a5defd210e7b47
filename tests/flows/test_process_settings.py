"""Process settings the `flows` package makes before pyarrow loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Notes the setting as pyarrow is first looked for, then imports the CLI and the deployments'
# entry point the way their processes do.
WATCH = """
import os, sys
seen = {}
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "pyarrow" and name not in seen:
            seen[name] = os.environ.get("MIMALLOC_ARENA_EAGER_COMMIT")
sys.meta_path.insert(0, Watch())
import flows.cli, flows.pipeline
print(seen)
"""


def run_with(code: str, variable: str, given: str | None) -> str:
    """`code` run by a new Python whose environment has `variable` set to `given` (None: unset);
    its output."""
    env = {k: v for k, v in os.environ.items() if k != variable}
    if given is not None:
        env[variable] = given
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize(("given", "expected"), [(None, "0"), ("2", "2")])
def test_arrow_s_arenas_are_committed_lazily_unless_the_user_says_otherwise(given, expected):
    out = run_with(WATCH, "MIMALLOC_ARENA_EAGER_COMMIT", given)
    # pyarrow was loaded by the imports, with the setting already made.
    assert out.strip().splitlines()[-1] == repr({"pyarrow": expected})


POOL = """
import flows.cli, flows.pipeline, pyarrow as pa
print(pa.default_memory_pool().backend_name, "jemalloc" in pa.supported_memory_backends())
"""


@pytest.mark.parametrize(("given", "expected"), [(None, "jemalloc"), ("system", "system"),
                                                 ("mimalloc", "mimalloc")])
def test_arrow_allocates_with_jemalloc_unless_the_user_chose_a_pool(given, expected):
    backend, has_jemalloc = run_with(POOL, "ARROW_DEFAULT_MEMORY_POOL", given).split()[-2:]
    if has_jemalloc == "False" and given is None:     # a pyarrow built without it: its default
        expected = "mimalloc"
    assert backend == expected
