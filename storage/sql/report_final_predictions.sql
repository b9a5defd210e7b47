-- The final label of every scored candidate clip of a finalize run, with its clip's name.
WITH predicted AS (
    SELECT f.clip_id, c.name, f.label, f.model_label, f.confidence, f.rules
    FROM final_predictions f JOIN clips c USING (clip_id)
    WHERE f.run_id = $run_id
),
final AS (
    SELECT * FROM predicted ORDER BY clip_id
)
SELECT * FROM final
