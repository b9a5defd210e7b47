-- The newest Parquet artifact of every (stage, name): what the SQL console shows as views.
SELECT stage, name, run_id, artifact_id, path, n_rows
FROM artifacts
WHERE path LIKE '%.parquet'
QUALIFY row_number() OVER (PARTITION BY stage, name ORDER BY created_at DESC, run_id DESC) = 1
ORDER BY stage, name
