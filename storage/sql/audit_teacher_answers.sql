-- The label answers (model, label, scores, reasoning) a teacher run gave for some clips
-- (registered as relation `wanted`: clip_id).
WITH outcomes AS MATERIALIZED (
    SELECT clip_id, cache_key
    FROM teacher_outcomes
    WHERE run_id = $teacher_run AND question = 'label' AND clip_id IN (SELECT clip_id FROM wanted)
),
answers AS MATERIALIZED (
    SELECT cache_key, model, label, scores, reasoning
    FROM teacher_answers
    WHERE clip_id IN (SELECT clip_id FROM wanted)
),
final AS (
    SELECT o.clip_id, a.model AS teacher_model, a.label AS teacher_label, a.scores AS teacher_scores,
           a.reasoning AS teacher_reasoning
    FROM outcomes AS o
    JOIN answers AS a USING (cache_key)
)
SELECT * FROM final
