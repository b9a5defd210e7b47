INSERT INTO stages (run_id, stage, round, status, started_at, finished_at, summary)
VALUES ($run_id, $stage, $round, $status, $started_at, $finished_at, $summary)
ON CONFLICT (run_id, stage, round) DO UPDATE SET
    status = excluded.status, finished_at = excluded.finished_at, summary = excluded.summary
