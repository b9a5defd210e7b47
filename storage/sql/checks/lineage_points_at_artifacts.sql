-- Invariant: lineage edges join catalogued artifacts on both ends.
SELECT l.artifact_id, l.input_artifact_id
FROM artifact_inputs AS l
LEFT JOIN artifacts AS a ON a.artifact_id = l.artifact_id
LEFT JOIN artifacts AS i ON i.artifact_id = l.input_artifact_id
WHERE a.artifact_id IS NULL OR i.artifact_id IS NULL
