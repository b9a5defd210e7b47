-- A finalize run's label-refinement flags (registered as relation `flags`).
INSERT INTO label_flags (run_id, clip_id, label, alternative, n_sources, sources, action, weight, flagged_at)
SELECT $run_id, clip_id, label, alternative, n_sources, sources::JSON, action, weight, $flagged_at
FROM flags
