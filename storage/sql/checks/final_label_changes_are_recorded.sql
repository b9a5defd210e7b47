-- A final label that differs from the ensemble's label names the rule that changed it.
WITH changed AS (
    SELECT run_id, clip_id FROM final_predictions WHERE label <> model_label
),
final AS (
    SELECT c.run_id, c.clip_id
    FROM changed c
    LEFT JOIN rule_changes r USING (run_id, clip_id)
    WHERE r.clip_id IS NULL
)
SELECT * FROM final
