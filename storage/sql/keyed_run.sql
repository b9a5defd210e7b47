-- The newest run of a command with a content key (completed, interrupted or failed).
SELECT run_id, status, started_at
FROM runs
WHERE command = $command AND cache_key = $cache_key
ORDER BY started_at DESC
LIMIT 1
