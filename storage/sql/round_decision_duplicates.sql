-- Clips a mining run's round decides more than once (checked inside the transaction that
-- inserted them, which is then undone): how many, and one of them.
SELECT count(*) AS n, min(clip_id) AS clip_id
FROM (SELECT clip_id
      FROM clip_decisions
      WHERE run_id = $run_id AND round = $round
      GROUP BY clip_id
      HAVING count(*) > 1)
