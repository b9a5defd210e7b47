-- Runs still marked running when a new writer takes the workspace lock: their process ended
-- without finishing them (killed, crashed, machine lost), since only the lock holder writes.
UPDATE runs
SET status = 'interrupted',
    finished_at = $now,
    error = 'the process ended before the run finished (found by ' || $run_id || ')'
WHERE status = 'running'
