-- The newest completed run of a stage for a dataset (stage summaries name their dataset).
SELECT run_id, finished_at, summary
FROM stages
WHERE stage = $stage AND status = 'completed'
  AND json_extract_string(summary, '$.dataset') = $dataset
ORDER BY finished_at DESC
LIMIT 1
