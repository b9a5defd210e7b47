SELECT dataset, root, layout, labels, registry_artifact_id, updated_at
FROM datasets
ORDER BY dataset
