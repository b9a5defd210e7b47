SELECT run_id, command, status, started_at, finished_at, error
FROM runs
ORDER BY started_at DESC
LIMIT $limit
