-- The out-of-fold prediction artifacts of a run, one per training stage (round-N, final).
SELECT stage, path
FROM artifacts
WHERE run_id = $run_id AND name = 'oof'
ORDER BY stage
