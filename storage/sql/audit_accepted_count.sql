-- How many clips a mining run accepted ($round NULL: in any round; $label NULL: any label).
SELECT count(*) AS n
FROM clip_decisions
WHERE run_id = $run_id AND decision = 'accepted'
  AND ($round IS NULL OR round = $round) AND ($label IS NULL OR label = $label)
