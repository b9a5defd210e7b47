-- The recorded stages of a run, in round order (a mining run has one per round).
SELECT stage, round, status, summary
FROM stages
WHERE run_id = $run_id AND stage = $stage
ORDER BY round
