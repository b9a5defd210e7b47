-- The newest feature set of each extractor for a dataset.
SELECT f.*, a.path, a.sha256
FROM feature_sets AS f
JOIN artifacts AS a USING (artifact_id)
WHERE f.dataset = $dataset
QUALIFY row_number() OVER (PARTITION BY f.extractor ORDER BY f.created_at DESC) = 1
ORDER BY f.extractor
