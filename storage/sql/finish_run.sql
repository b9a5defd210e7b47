UPDATE runs SET status = $status, finished_at = $finished_at, error = $error
WHERE run_id = $run_id
