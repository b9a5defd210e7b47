-- The clips of one dataset and split that a teacher may be asked about (usable media): every
-- one ($every), or those in relation `wanted` (clip_id), a chunk of the pool; a wanted clip
-- outside the pool (another dataset or split, unusable media) is left out.
-- (teacher_pool_ids lists the same clips' ids.)
SELECT clip_id, name, video_path, audio_path, text, video_sha256, audio_sha256, duration_s
FROM clips
WHERE dataset = $dataset
  AND split = $split
  AND status IN ('ok', 'degraded')
  AND ($every OR clip_id IN (SELECT clip_id FROM wanted))
ORDER BY clip_id
