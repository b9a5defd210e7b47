INSERT INTO artifacts (artifact_id, run_id, stage, name, path, sha256, n_rows, n_bytes, created_at)
VALUES ($artifact_id, $run_id, $stage, $name, $path, $sha256, $n_rows, $n_bytes, $created_at)
ON CONFLICT (artifact_id) DO NOTHING
