-- The pseudo-labels in force after round $round_a of run $run_a against those after round
-- $round_b of run $run_b: a clip's state is its latest decision up to that round (an accepted
-- clip leaves the pool, so it stays accepted). entered: accepted only at B; left: only at A;
-- changed: accepted at both with another label.
WITH a AS (
    SELECT clip_id, arg_max(decision, round) AS decision, arg_max(label, round) AS label,
           max(round) AS decided_in
    FROM clip_decisions
    WHERE run_id = $run_a AND round <= $round_a
    GROUP BY clip_id
),
b AS (
    SELECT clip_id, arg_max(decision, round) AS decision, arg_max(label, round) AS label,
           max(round) AS decided_in
    FROM clip_decisions
    WHERE run_id = $run_b AND round <= $round_b
    GROUP BY clip_id
),
joined AS (
    SELECT clip_id, a.decision AS decision_a, a.label AS label_a, a.decided_in AS decided_a,
           b.decision AS decision_b, b.label AS label_b, b.decided_in AS decided_b
    FROM a FULL JOIN b USING (clip_id)
),
changes AS (
    SELECT *,
        CASE
            WHEN decision_a IS DISTINCT FROM 'accepted' AND decision_b = 'accepted' THEN 'entered'
            WHEN decision_a = 'accepted' AND decision_b IS DISTINCT FROM 'accepted' THEN 'left'
            WHEN decision_a = 'accepted' AND label_a IS DISTINCT FROM label_b THEN 'changed'
        END AS change
    FROM joined
),
final AS (
    SELECT ch.change, ch.clip_id, c.name, ch.label_a, ch.label_b, ch.decision_a, ch.decision_b,
           ch.decided_a, ch.decided_b
    FROM changes AS ch
    LEFT JOIN clips AS c USING (clip_id)
    WHERE ch.change IS NOT NULL
)
SELECT * FROM final ORDER BY change, name, clip_id
