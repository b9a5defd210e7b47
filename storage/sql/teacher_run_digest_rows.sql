-- What a teacher run answered, for its content digest (storage.teacher_store.answers_digest):
-- each pool clip's outcome and answer per question, without what differs between runs that
-- asked the same (cache hits, attempts) and without the long text (reasoning, raw text).
SELECT o.clip_id, o.question, o.outcome, a.status, a.label, a.scores
FROM teacher_outcomes AS o
LEFT JOIN teacher_answers AS a USING (cache_key)
WHERE o.run_id = $run_id
ORDER BY o.question, o.clip_id
