SELECT artifact_id, name, path, sha256, n_rows
FROM artifacts
WHERE run_id = $run_id AND stage = $stage
ORDER BY name
