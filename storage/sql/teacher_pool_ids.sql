-- The ids of teacher_pool's clips (the same predicate: keep them alike): the pool, without its
-- rows, which teacher_pool reads a chunk at a time.
SELECT clip_id
FROM clips
WHERE dataset = $dataset
  AND split = $split
  AND status IN ('ok', 'degraded')
ORDER BY clip_id
