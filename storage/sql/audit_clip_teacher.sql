-- Every teacher answer about one clip (each question, teacher and model), and what each
-- teacher run made of it, oldest first. The clip's outcomes are found first; only their
-- answers are looked up (both CTEs materialized, so each is one filtered scan on clip_id, the
-- tables having no index since v10/v11: joined inline, the answers became a join filter).
WITH outcomes AS MATERIALIZED (
    SELECT run_id, question, teacher, outcome, from_cache, attempts, cache_key
    FROM teacher_outcomes
    WHERE clip_id = $clip_id
),
answers AS MATERIALIZED (
    SELECT cache_key, model, status, label, scores, reasoning, raw_text, modality_shares, error, created_at
    FROM teacher_answers
    WHERE clip_id = $clip_id
),
final AS (
    SELECT o.run_id, o.question, o.teacher, o.outcome, o.from_cache, o.attempts, a.model, a.status,
           a.label, a.scores, a.reasoning, a.raw_text, a.modality_shares, a.error, a.created_at
    FROM outcomes AS o
    LEFT JOIN answers AS a USING (cache_key)
)
SELECT * FROM final ORDER BY created_at NULLS LAST, run_id, question
