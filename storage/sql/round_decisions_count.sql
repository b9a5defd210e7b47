-- How many decisions a run's round already has (recording it again would decide its clips twice).
SELECT count(*) AS n FROM clip_decisions WHERE run_id = $run_id AND round = $round
