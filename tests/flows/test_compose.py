"""The docker-compose setup, exercised for real without Docker: a Prefect server on the loopback
PostgreSQL with the settings docker-compose.yml gives it, a process worker on the `mersemi` pool,
and a deployment from prefect.yaml run through them to completion."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")


def postgres_up() -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 5432), timeout=1):
        return True
    return False


pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not postgres_up(), reason="no PostgreSQL on 127.0.0.1:5432")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _admin(*statements: str) -> None:
    import asyncpg

    con = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database="postgres")
    try:
        for sql in statements:
            await con.execute(sql)
    finally:
        await con.close()


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group; SIGKILL what is left after 30 s."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 30)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def compose_service(name: str) -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"][name]


@pytest.fixture
def compose_server(tmp_path):
    """The compose file's prefect-server service, on loopback: its command and environment, with
    the host `postgres` and the database swapped for 127.0.0.1 and a fresh database."""
    db = f"mersemi_test_{uuid.uuid4().hex[:8]}"
    pg = compose_service("postgres")["environment"]
    server = compose_service("prefect-server")
    asyncio.run(_admin(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{pg['POSTGRES_USER']}') "
        f"THEN CREATE ROLE {pg['POSTGRES_USER']} LOGIN PASSWORD '{pg['POSTGRES_PASSWORD']}'; END IF; END $$",
        f"CREATE DATABASE {db} OWNER {pg['POSTGRES_USER']}"))
    env = {k: str(v) for k, v in server["environment"].items()}
    url = env["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert url.endswith(f"@postgres:5432/{pg['POSTGRES_DB']}")
    head = url.rsplit("/", 1)[0].replace("@postgres:5432", "@127.0.0.1:5432")
    env["PREFECT_API_DATABASE_CONNECTION_URL"] = f"{head}/{db}"
    port = free_port()
    command = list(server["command"])
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    assert command[:3] == ["prefect", "server", "start"]
    base = os.environ | {"PREFECT_HOME": str(tmp_path / "prefect-home")}
    base.pop("PREFECT_API_URL", None)
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115  (closed in the finally below)
    proc = subprocess.Popen([PREFECT, *command[1:]], env=base | env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(1)
        else:
            pytest.fail("the Prefect server did not come up:\n"
                        + (tmp_path / "server.log").read_text()[-3000:])
        yield api, base | {"PREFECT_API_URL": api}, db
    finally:
        stop(proc)
        log.close()
        asyncio.run(_admin(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))


def test_a_deployment_runs_through_the_postgres_backed_server_and_a_worker(compose_server, tmp_path,
                                                                           synthetic_corpus):
    api, env, db = compose_server
    # The server really keeps its state in PostgreSQL.
    check = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-tAc",
                            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'flow_run'"],
                           capture_output=True, text=True)
    if check.returncode == 0:
        assert check.stdout.strip() == "1"
    worker_env = env | {k: str(v) for k, v in compose_service("worker")["environment"].items()
                        if k.startswith("MERSEMI_")}
    worker_env |= {"PREFECT_API_URL": api, "MERSEMI_SOURCE": str(ROOT),
                   "MERSEMI_WORKSPACE": str(tmp_path / "ws"), "MERSEMI_DATASET": str(synthetic_corpus)}
    pool = compose_service("worker")["command"]
    pool_name = pool[pool.index("--pool") + 1]

    def cli(*args: str) -> str:
        done = subprocess.run([PREFECT, *args], env=worker_env, cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout

    cli("work-pool", "create", pool_name, "--type", "process")
    cli("--no-prompt", "deploy", "--all")
    with httpx.Client(base_url=api, timeout=30) as client:
        deployments = {d["name"]: d for d in client.post("/deployments/filter", json={}).json()}
        assert set(deployments) == {"nightly-round", "on-demand"}
        nightly = deployments["nightly-round"]
        assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["0 2 * * *"]
        assert nightly["parameters"]["params"]["workspace"] == str(tmp_path / "ws")
        params = {"params": {
            "dataset_dir": str(synthetic_corpus), "workspace": str(tmp_path / "ws"),
            "teacher": {"backend": "replay", "answers": str(synthetic_corpus / "teacher" / "answers.jsonl")},
            "features": {"workers": 1, "extractors": ["audio_egemaps", "text"]},
            "mine": {"rounds": 1, "folds": 2, "seeds": [0], "epochs": 20, "target_precision": 0.6},
            "finalize": {"folds": 2, "seeds": [0], "epochs": 20}}}
        run = client.post(f"/deployments/{deployments['on-demand']['id']}/create_flow_run",
                          json={"parameters": params}).json()
        log = open(tmp_path / "worker.log", "w")  # noqa: SIM115  (closed in the finally below)
        assert pool[:3] == ["prefect", "worker", "start"]
        worker = subprocess.Popen([PREFECT, *pool[1:]], env=worker_env, cwd=tmp_path, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline, state = time.time() + 600, None
            while time.time() < deadline:
                state = client.get(f"/flow_runs/{run['id']}").json()["state"]
                finished = state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
                if finished or worker.poll() is not None:
                    break
                time.sleep(3)
        finally:
            stop(worker)
            log.close()
        assert state and state["type"] == "COMPLETED", (
            json.dumps(state) + "\n" + (tmp_path / "worker.log").read_text()[-4000:])
        subflows = client.post("/flow_runs/filter", json={}).json()
        names = {f["id"]: f["name"] for f in client.post("/flows/filter", json={}).json()}
        ran = sorted(names[r["flow_id"]] for r in subflows if r["state"]["type"] == "COMPLETED")
        assert ran == sorted(["pipeline", "ingest", "features", "teacher", "mine", "finalize", "report"])
    assert (tmp_path / "ws" / "catalog.duckdb").exists()
