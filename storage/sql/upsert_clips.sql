-- Bring the clips table in line with a new registry (registered as relation `registry`).
-- A clip keeps the run that first saw it; last_changed_run moves only when its row changed.
INSERT INTO clips
WITH prior AS (
    SELECT * FROM clips WHERE dataset = $dataset
),
final AS (
    SELECT
        r.clip_id, r.dataset, r.name, r.split, r.label, r.video_path, r.audio_path, r.text,
        r.video_sha256, r.audio_sha256, r.duration_s, r.has_video, r.has_audio, r.has_text,
        r.status, r.reason,
        coalesce(p.first_seen_run, $run_id) AS first_seen_run,
        CASE
            WHEN p.clip_id IS NULL THEN $run_id
            WHEN (r.split, r.label, r.video_path, r.audio_path, r.text, r.video_sha256,
                  r.audio_sha256, r.duration_s, r.has_video, r.has_audio, r.has_text,
                  r.status, r.reason)
                 IS DISTINCT FROM
                 (p.split, p.label, p.video_path, p.audio_path, p.text, p.video_sha256,
                  p.audio_sha256, p.duration_s, p.has_video, p.has_audio, p.has_text,
                  p.status, p.reason)
            THEN $run_id
            ELSE p.last_changed_run
        END AS last_changed_run
    FROM registry AS r
    LEFT JOIN prior AS p USING (clip_id)
)
SELECT * FROM final
ON CONFLICT (clip_id) DO UPDATE SET
    split = excluded.split, label = excluded.label, video_path = excluded.video_path,
    audio_path = excluded.audio_path, text = excluded.text,
    video_sha256 = excluded.video_sha256, audio_sha256 = excluded.audio_sha256,
    duration_s = excluded.duration_s, has_video = excluded.has_video,
    has_audio = excluded.has_audio, has_text = excluded.has_text, status = excluded.status,
    reason = excluded.reason, last_changed_run = excluded.last_changed_run
