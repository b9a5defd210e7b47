-- Invariant: every clip's dataset is registered, and its registry artifact is catalogued.
SELECT c.clip_id, c.dataset
FROM clips AS c
LEFT JOIN datasets AS d USING (dataset)
LEFT JOIN artifacts AS a ON a.artifact_id = d.registry_artifact_id
WHERE d.dataset IS NULL OR a.artifact_id IS NULL
