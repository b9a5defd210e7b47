-- A broken run taken up again by the process that now holds the workspace lock.
UPDATE runs
SET status = 'running', finished_at = NULL, error = NULL, flow_run_id = $flow_run_id
WHERE run_id = $run_id
