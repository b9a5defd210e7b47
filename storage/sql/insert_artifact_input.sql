INSERT INTO artifact_inputs (artifact_id, input_artifact_id)
VALUES ($artifact_id, $input_artifact_id)
ON CONFLICT DO NOTHING
