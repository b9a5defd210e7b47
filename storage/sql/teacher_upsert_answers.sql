-- Record new teacher answers (registered as relation `answers`, one row per cache key), after
-- teacher_delete_answers removed the rows they replace (the table has no key to conflict on:
-- schema v10).
INSERT INTO teacher_answers (cache_key, clip_id, teacher, model, media_sha256, prompt_sha256,
    params_sha256, status, label, scores, reasoning, raw_text, tokens_in, tokens_out, latency_s,
    cost_usd, error, run_id, created_at, question, modality_shares)
SELECT cache_key, clip_id, teacher, model, media_sha256, prompt_sha256, params_sha256, status,
       label, scores::JSON, reasoning, raw_text, tokens_in, tokens_out, latency_s, cost_usd, error,
       run_id, created_at, question, modality_shares::JSON
FROM answers
