-- The ids of the clips of one dataset and split that a teacher may be asked about (usable
-- media): the pool, without its rows (teacher_pool_rows reads those a chunk at a time).
SELECT clip_id
FROM clips
WHERE dataset = $dataset
  AND split = $split
  AND status IN ('ok', 'degraded')
ORDER BY clip_id
