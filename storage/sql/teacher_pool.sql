-- The clips of one dataset and split that a teacher may be asked about (usable media).
SELECT clip_id, name, video_path, audio_path, text, video_sha256, audio_sha256, duration_s
FROM clips
WHERE dataset = $dataset
  AND split = $split
  AND status IN ('ok', 'degraded')
ORDER BY clip_id
