-- The metrics a mining run recorded per round (validation scores and counts).
SELECT round, name, scope, value
FROM metrics
WHERE run_id = $run_id AND stage = 'mine'
ORDER BY round, name, scope
