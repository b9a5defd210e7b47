"""Task runners: where a flow's mapped tasks run. Only the sharded stage (features) takes a
choice; every other stage runs its few, large tasks in Prefect's default thread pool."""

from __future__ import annotations

from prefect.task_runners import TaskRunner


def dask_runner(address: str | None, workers: int) -> TaskRunner:
    """Prefect's Dask task runner: on the cluster whose scheduler is at `address`, or on a local
    cluster of `workers` processes with one thread each (our shards are CPU-bound, and each
    already uses one BLAS/torch/decoder thread). The cluster's workers run the tasks' code
    and write only the feature cache; the flow process records everything in the catalog."""
    from prefect_dask import DaskTaskRunner  # imported only when asked for: it is slow to import

    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": None})


def ensure_tag_limit(tag: str, limit: int) -> int:
    """The server's concurrency limit on task tag `tag`, created at `limit` if it has none;
    a limit an operator set (`prefect concurrency-limit create TAG N`) stands as it is."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_concurrency_limit_by_tag(tag).concurrency_limit
        except ObjectNotFound:
            client.create_concurrency_limit(tag=tag, concurrency_limit=limit)
            return limit
