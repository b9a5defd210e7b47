-- The cache's answers for some keys (registered as relation `wanted`: cache_key), as
-- teacher_cached_answers: a teacher run reads the cache a chunk of its pool at a time.
SELECT cache_key, status, label, scores, reasoning, modality_shares,
       CASE WHEN question = 'enrich' THEN raw_text END AS raw_text, tokens_in, tokens_out,
       latency_s, cost_usd, error
FROM teacher_answers
JOIN wanted USING (cache_key)
WHERE teacher = $teacher
  AND question = $question
  AND status IN ('answered', 'unparseable', 'refused')
