-- The times one clip's human label was contradicted by every other source.
SELECT run_id, label, alternative, n_sources, sources, action, weight, flagged_at
FROM label_flags
WHERE clip_id = $clip_id
ORDER BY flagged_at
