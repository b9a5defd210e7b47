INSERT INTO feature_sets (run_id, dataset, extractor, extractor_key, params, artifact_id, n_clips,
                          n_ok, n_missing, n_error, dim, seq_dim, created_at)
VALUES ($run_id, $dataset, $extractor, $extractor_key, $params, $artifact_id, $n_clips, $n_ok,
        $n_missing, $n_error, $dim, $seq_dim, $created_at)
