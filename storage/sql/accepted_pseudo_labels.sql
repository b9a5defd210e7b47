-- The pseudo-labels a mining run accepted (discarded rounds were recorded as rejected).
WITH accepted AS (
    SELECT clip_id, label, confidence, round
    FROM clip_decisions
    WHERE run_id = $run_id AND decision = 'accepted'
),
final AS (
    SELECT * FROM accepted ORDER BY round, clip_id
)
SELECT * FROM final
