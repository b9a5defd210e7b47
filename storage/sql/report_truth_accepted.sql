-- Accepted pseudo-labels of a mining run against a truth table (registered as relation
-- `truth`: name, label), per round and accepted label: how many, and how many were right.
WITH accepted AS (
    SELECT d.round, d.label, t.label AS truth
    FROM clip_decisions d
    JOIN clips c USING (clip_id)
    JOIN truth t ON t.name = c.name
    WHERE d.run_id = $run_id AND d.decision = 'accepted' AND c.dataset = $dataset
),
final AS (
    SELECT round, label, count(*) AS n, count(*) FILTER (WHERE label = truth) AS correct
    FROM accepted
    GROUP BY round, label
)
SELECT * FROM final ORDER BY round, label
