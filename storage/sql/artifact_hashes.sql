-- The content hashes of some artifacts.
SELECT artifact_id, sha256
FROM artifacts
WHERE list_contains($artifact_ids, artifact_id)
ORDER BY artifact_id
