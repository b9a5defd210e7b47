-- The outcome of every pool clip of one teacher run, with its answer when it has one.
SELECT o.clip_id, o.question, o.outcome, o.from_cache, o.attempts, a.model, a.status, a.label,
       a.scores, a.reasoning, a.raw_text, a.error
FROM teacher_outcomes AS o
LEFT JOIN teacher_answers AS a USING (cache_key)
WHERE o.run_id = $run_id
ORDER BY o.question, o.clip_id
