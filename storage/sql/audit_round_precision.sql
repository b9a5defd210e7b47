-- Accepted pseudo-labels of a mining run per round and label, scored against hidden truth
-- (registered as relation `truth`: name, label; scoring only, nothing feeds back into a run).
WITH accepted AS (
    SELECT d.round, d.label, c.name
    FROM clip_decisions AS d
    JOIN clips AS c USING (clip_id)
    WHERE d.run_id = $run_id AND d.decision = 'accepted' AND c.dataset = $dataset
),
final AS (
    SELECT a.round, a.label, count(*) AS accepted, count(t.label) AS judged,
           count_if(t.label = a.label) AS correct
    FROM accepted AS a
    LEFT JOIN truth AS t USING (name)
    GROUP BY ALL
)
SELECT * FROM final ORDER BY round, label
