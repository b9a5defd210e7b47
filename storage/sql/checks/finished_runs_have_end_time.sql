-- Invariant: a run that is no longer running records when it ended.
SELECT run_id, status
FROM runs
WHERE status <> 'running' AND finished_at IS NULL
