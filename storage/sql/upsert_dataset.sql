INSERT INTO datasets (dataset, root, layout, labels, registry_artifact_id, registry_sha256, updated_at)
VALUES ($dataset, $root, $layout, $labels, $registry_artifact_id, $registry_sha256, $updated_at)
ON CONFLICT (dataset) DO UPDATE SET
    root = excluded.root, layout = excluded.layout, labels = excluded.labels,
    registry_artifact_id = excluded.registry_artifact_id,
    registry_sha256 = excluded.registry_sha256, updated_at = excluded.updated_at
