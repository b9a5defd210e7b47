-- Final predictions of a finalize run on the clips a truth table names (relation `truth`:
-- name, label): the clip, its true label and the final label.
WITH scored AS (
    SELECT f.clip_id, c.name, t.label AS truth, f.label
    FROM final_predictions f
    JOIN clips c USING (clip_id)
    JOIN truth t ON t.name = c.name
    WHERE f.run_id = $run_id
),
final AS (
    SELECT * FROM scored ORDER BY clip_id
)
SELECT * FROM final
