-- One row per pool clip of a teacher run (registered as relation `outcomes`).
INSERT INTO teacher_outcomes (run_id, clip_id, question, teacher, cache_key, outcome, from_cache,
    attempts)
SELECT $run_id, clip_id, question, teacher, cache_key, outcome, from_cache, attempts
FROM outcomes
