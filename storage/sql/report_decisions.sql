-- How many pool clips each round of a mining run accepted, rejected or did not consider, per
-- label (the label the voters proposed; NULL when they proposed none).
WITH decisions AS (
    SELECT round, label, decision
    FROM clip_decisions
    WHERE run_id = $run_id
),
final AS (
    SELECT round, label, decision, count(*) AS n
    FROM decisions
    GROUP BY round, label, decision
)
SELECT * FROM final ORDER BY round, label NULLS LAST, decision
