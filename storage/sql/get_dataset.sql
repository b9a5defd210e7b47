SELECT dataset, root, layout, labels, registry_artifact_id, registry_sha256, updated_at
FROM datasets
WHERE dataset = $dataset
