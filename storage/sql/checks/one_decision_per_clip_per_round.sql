-- Invariant: a clip is decided at most once per run and round.
SELECT run_id, round, clip_id, count(*) AS n
FROM clip_decisions
GROUP BY ALL
HAVING count(*) > 1
