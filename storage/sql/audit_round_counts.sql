-- A mining run's decisions per round, label, decision and kind of reason, as counted when
-- each round was recorded (insert_round_counts.sql).
WITH final AS (
    SELECT round, label, decision, kind, n
    FROM round_counts
    WHERE run_id = $run_id
)
SELECT * FROM final ORDER BY round, label NULLS LAST, decision, kind
