-- Schema version 3: feature sets, one row per extractor per features run.
CREATE TABLE feature_sets (
    run_id          VARCHAR NOT NULL,
    dataset         VARCHAR NOT NULL,
    extractor       VARCHAR NOT NULL,        -- visual_face, audio_egemaps, ...
    extractor_key   VARCHAR NOT NULL,        -- name, version and parameter hash
    params          JSON NOT NULL,
    artifact_id     VARCHAR NOT NULL,        -- <run>/features/<extractor>
    n_clips         BIGINT NOT NULL,
    n_ok            BIGINT NOT NULL,
    n_missing       BIGINT NOT NULL,
    n_error         BIGINT NOT NULL,
    dim             INTEGER,
    seq_dim         INTEGER,
    created_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, extractor)
);
