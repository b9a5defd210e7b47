-- Record new teacher answers (registered as relation `answers`). A failed row is replaced
-- when a later run gets an answer for the same key.
INSERT INTO teacher_answers (cache_key, clip_id, teacher, model, media_sha256, prompt_sha256,
    params_sha256, status, label, scores, reasoning, raw_text, tokens_in, tokens_out, latency_s,
    cost_usd, error, run_id, created_at, question, modality_shares)
SELECT cache_key, clip_id, teacher, model, media_sha256, prompt_sha256, params_sha256, status,
       label, scores::JSON, reasoning, raw_text, tokens_in, tokens_out, latency_s, cost_usd, error,
       run_id, created_at, question, modality_shares::JSON
FROM answers
ON CONFLICT (cache_key) DO UPDATE SET
    clip_id = excluded.clip_id, status = excluded.status, label = excluded.label,
    scores = excluded.scores, reasoning = excluded.reasoning, raw_text = excluded.raw_text,
    tokens_in = excluded.tokens_in, tokens_out = excluded.tokens_out,
    latency_s = excluded.latency_s, cost_usd = excluded.cost_usd, error = excluded.error,
    run_id = excluded.run_id, created_at = excluded.created_at,
    modality_shares = excluded.modality_shares
