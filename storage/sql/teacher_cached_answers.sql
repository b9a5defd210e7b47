-- Answers already paid for by one kind of teacher: the cache. Failed requests are not in it.
SELECT cache_key, status, label, scores, reasoning, modality_shares, raw_text, tokens_in, tokens_out,
       latency_s, cost_usd, error
FROM teacher_answers
WHERE teacher = $teacher
  AND question = $question
  AND status IN ('answered', 'unparseable', 'refused')
