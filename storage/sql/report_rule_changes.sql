-- How many final labels each re-ranking rule of a finalize run changed, from which label to which.
WITH changes AS (
    SELECT step, rule, before, after
    FROM rule_changes
    WHERE run_id = $run_id
),
final AS (
    SELECT step, rule, before, after, count(*) AS n
    FROM changes
    GROUP BY step, rule, before, after
)
SELECT * FROM final ORDER BY step, before, after
