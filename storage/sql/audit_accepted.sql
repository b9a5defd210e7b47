-- The clips a mining run accepted ($round NULL: in any round; $label NULL: any label), with
-- their names. The teacher's label and confidence are in `votes`; its reasoning is a separate
-- query (audit_accepted_reasoning), as joining the answers costs more than the rest.
-- $limit: the first rows only (NULL: all); audit_accepted_count counts them all.
WITH accepted AS MATERIALIZED (
    SELECT round, clip_id, label, confidence, reason, votes, decided_by, decided_at
    FROM clip_decisions
    WHERE run_id = $run_id AND decision = 'accepted'
      AND ($round IS NULL OR round = $round) AND ($label IS NULL OR label = $label)
),
names AS (
    -- A semi-join on the few accepted ids rather than a join against every clip.
    SELECT clip_id, name FROM clips WHERE clip_id IN (SELECT clip_id FROM accepted)
),
final AS (
    SELECT acc.round, acc.clip_id, n.name, acc.label, acc.confidence, acc.reason, acc.votes,
           acc.decided_by, acc.decided_at
    FROM accepted AS acc
    LEFT JOIN names AS n USING (clip_id)
)
SELECT * FROM final ORDER BY round, confidence DESC NULLS LAST, name
LIMIT $limit
