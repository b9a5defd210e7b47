-- Schema version 10: the teacher's answer cache loses its indexes, the primary key on
-- cache_key and the clip_id index (v8). DuckDB loads an index whole to insert into it: each
-- upsert of 5,000 new answers peaked +61..+101 MB with 100,000 answers cached and +47..+68 with
-- 25,000, growing with the cache; without them +23..+34 at both sizes, in half the time
-- (docs/benchmarks.md, session 16). The writer replaces a key's row by deleting it and
-- inserting the new one in one transaction (storage.teacher_store.record_answers, one row per
-- key of a batch), the check one_answer_per_cache_key finds any key twice, and the cache and
-- the audit read the table by scanning it (a teacher run reads it a chunk of 10,000 keys at
-- a time).
DROP INDEX teacher_answers_clip_id;
CREATE TABLE teacher_answers_v10 (
    cache_key       VARCHAR NOT NULL,        -- hash(media sha256, prompt sha256, model, params)
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
    created_at      TIMESTAMP NOT NULL,
    question        VARCHAR DEFAULT 'label', -- label, enrich (v2)
    modality_shares JSON                     -- the model's account of each modality's share (v2)
);
INSERT INTO teacher_answers_v10
SELECT cache_key, clip_id, teacher, model, media_sha256, prompt_sha256, params_sha256, status, label,
       scores, reasoning, raw_text, tokens_in, tokens_out, latency_s, cost_usd, error, run_id,
       created_at, question, modality_shares
FROM teacher_answers
ORDER BY cache_key;
DROP TABLE teacher_answers;
ALTER TABLE teacher_answers_v10 RENAME TO teacher_answers;
