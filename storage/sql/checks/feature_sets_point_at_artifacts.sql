-- Invariant: every feature set's artifact is catalogued, and its counts add up.
SELECT f.run_id, f.extractor
FROM feature_sets AS f
LEFT JOIN artifacts AS a USING (artifact_id)
WHERE a.artifact_id IS NULL OR f.n_ok + f.n_missing + f.n_error <> f.n_clips
