-- Answers already paid for by one kind of teacher: the cache. Failed requests are not in it.
-- Every entry ($every), or those of the keys in relation `wanted` (cache_key): a teacher run
-- reads the cache a chunk of its pool at a time.
-- The raw text only for enrichment, whose answer it is: a label answer's raw text is recorded
-- once and never read back from the cache (at 100,000 cached answers: ~40 MB less, measured
-- with bench/stage_trace.py on the scale bench's teacher stage).
SELECT cache_key, status, label, scores, reasoning, modality_shares,
       CASE WHEN question = 'enrich' THEN raw_text END AS raw_text, tokens_in, tokens_out,
       latency_s, cost_usd, error
FROM teacher_answers
WHERE teacher = $teacher
  AND question = $question
  AND status IN ('answered', 'unparseable', 'refused')
  AND ($every OR cache_key IN (SELECT cache_key FROM wanted))
