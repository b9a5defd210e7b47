-- mersemi catalog, schema version 1.
-- This folder is the one place the schema is written: each file NNNN_name.sql is one
-- migration, applied once, in order, inside a transaction; schema_migrations records it.
-- Never edit an applied migration: add the next file.

CREATE TABLE runs (
    run_id          VARCHAR PRIMARY KEY,
    command         VARCHAR NOT NULL,        -- ingest, features, train, mine, ...
    status          VARCHAR NOT NULL,        -- running, completed, failed
    started_at      TIMESTAMP NOT NULL,
    finished_at     TIMESTAMP,
    params          JSON,                    -- validated parameters of the run
    code_version    VARCHAR,
    flow_run_id     VARCHAR,                 -- Prefect flow run, when run through Prefect
    error           VARCHAR
);

CREATE TABLE stages (
    run_id          VARCHAR NOT NULL,
    stage           VARCHAR NOT NULL,
    round           INTEGER NOT NULL DEFAULT 0,
    status          VARCHAR NOT NULL,
    started_at      TIMESTAMP NOT NULL,
    finished_at     TIMESTAMP,
    summary         JSON,
    PRIMARY KEY (run_id, stage, round)
);

CREATE TABLE artifacts (
    artifact_id     VARCHAR PRIMARY KEY,     -- <run_id>/<stage>/<name>
    run_id          VARCHAR NOT NULL,
    stage           VARCHAR NOT NULL,
    name            VARCHAR NOT NULL,
    path            VARCHAR NOT NULL,        -- relative to the workspace's artifact root
    sha256          VARCHAR NOT NULL,        -- of the Parquet file's bytes
    n_rows          BIGINT NOT NULL,
    n_bytes         BIGINT NOT NULL,
    created_at      TIMESTAMP NOT NULL
);

-- Lineage: which artifacts an artifact was computed from.
CREATE TABLE artifact_inputs (
    artifact_id       VARCHAR NOT NULL,
    input_artifact_id VARCHAR NOT NULL,
    PRIMARY KEY (artifact_id, input_artifact_id)
);

CREATE TABLE datasets (
    dataset         VARCHAR PRIMARY KEY,
    root            VARCHAR NOT NULL,
    layout          VARCHAR NOT NULL,        -- mer2025, manifest, folder
    labels          JSON NOT NULL,           -- the label set, in order
    registry_artifact_id VARCHAR NOT NULL,   -- the current clip registry
    registry_sha256 VARCHAR NOT NULL,
    updated_at      TIMESTAMP NOT NULL
);

-- The current state of every registered clip (the latest registry of its dataset).
CREATE TABLE clips (
    clip_id         VARCHAR PRIMARY KEY,
    dataset         VARCHAR NOT NULL,
    name            VARCHAR NOT NULL,
    split           VARCHAR NOT NULL,        -- train (labelled), candidate (unlabelled), test
    label           VARCHAR,                 -- human label, train/test only
    video_path      VARCHAR,
    audio_path      VARCHAR,
    text            VARCHAR,
    video_sha256    VARCHAR,
    audio_sha256    VARCHAR,
    duration_s      DOUBLE,
    has_video       BOOLEAN NOT NULL,
    has_audio       BOOLEAN NOT NULL,
    has_text        BOOLEAN NOT NULL,
    status          VARCHAR NOT NULL,        -- ok, degraded, error, removed
    reason          VARCHAR,
    first_seen_run  VARCHAR NOT NULL,
    last_changed_run VARCHAR NOT NULL,
    UNIQUE (dataset, name)
);

-- Probe cache: a file whose path, size and mtime are unchanged is not hashed or probed again.
CREATE TABLE media_files (
    path            VARCHAR PRIMARY KEY,
    size            BIGINT NOT NULL,
    mtime_ns        BIGINT NOT NULL,
    sha256          VARCHAR NOT NULL,
    probe           JSON NOT NULL
);

-- Who decided what, when and why, per clip and round.
CREATE TABLE clip_decisions (
    run_id          VARCHAR NOT NULL,
    round           INTEGER NOT NULL,
    clip_id         VARCHAR NOT NULL,
    decision        VARCHAR NOT NULL,        -- accepted, rejected, not_considered
    label           VARCHAR,
    confidence      DOUBLE,
    reason          VARCHAR NOT NULL,
    votes           JSON,                    -- {voter: {label, confidence}}
    decided_by      VARCHAR NOT NULL,        -- policy name and version
    decided_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, round, clip_id)
);

-- Teacher answers double as the cache: an answer is never paid for twice.
CREATE TABLE teacher_answers (
    cache_key       VARCHAR PRIMARY KEY,     -- hash(media sha256, prompt sha256, model, params)
    clip_id         VARCHAR NOT NULL,
    teacher         VARCHAR NOT NULL,        -- gemini, replay, local
    model           VARCHAR NOT NULL,
    media_sha256    VARCHAR,
    prompt_sha256   VARCHAR,
    params_sha256   VARCHAR,
    status          VARCHAR NOT NULL,        -- answered, unparseable, refused, failed
    label           VARCHAR,
    scores          JSON,
    reasoning       VARCHAR,
    raw_text        VARCHAR,
    tokens_in       BIGINT,
    tokens_out      BIGINT,
    latency_s       DOUBLE,
    cost_usd        DOUBLE,
    error           VARCHAR,
    run_id          VARCHAR NOT NULL,
    created_at      TIMESTAMP NOT NULL
);

CREATE TABLE metrics (
    run_id          VARCHAR NOT NULL,
    stage           VARCHAR NOT NULL,
    round           INTEGER NOT NULL DEFAULT 0,
    name            VARCHAR NOT NULL,        -- e.g. weighted_f1
    scope           VARCHAR NOT NULL DEFAULT '',  -- e.g. fused/fold-2 or label:happy
    value           DOUBLE NOT NULL,
    recorded_at     TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, stage, round, name, scope)
);
