-- Every recorded round's counts add up to its decisions, per label and decision.
WITH decided AS (
    SELECT run_id, round, label, decision, count(*) AS n
    FROM clip_decisions
    GROUP BY ALL
),
counted AS (
    SELECT run_id, round, label, decision, sum(n) AS n
    FROM round_counts
    GROUP BY ALL
),
final AS (
    SELECT coalesce(d.run_id, c.run_id) AS run_id, coalesce(d.round, c.round) AS round,
           coalesce(d.label, c.label) AS label, coalesce(d.decision, c.decision) AS decision,
           d.n AS decided, c.n AS counted
    FROM decided d
    FULL OUTER JOIN counted c
      ON d.run_id = c.run_id AND d.round = c.round AND d.decision = c.decision
     AND d.label IS NOT DISTINCT FROM c.label
    WHERE d.n IS DISTINCT FROM c.n
)
SELECT * FROM final
