-- What a teacher may see of some clips of the pool (registered as relation `wanted`: clip_id),
-- by clip_id; a clip that is not in the pool (another dataset or split, unusable media) is
-- left out.
SELECT clip_id, name, video_path, audio_path, text, video_sha256, audio_sha256, duration_s
FROM clips
JOIN wanted USING (clip_id)
WHERE dataset = $dataset
  AND split = $split
  AND status IN ('ok', 'degraded')
ORDER BY clip_id
