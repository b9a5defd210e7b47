-- Schema version 9: the tables written a row per pool clip in one transaction lose their
-- primary keys: clip_decisions (run_id, round, clip_id) and teacher_outcomes (run_id, clip_id,
-- question). DuckDB builds a transaction's part of every index in memory beside its rows: the
-- decisions' key was ~0.25 KB per decision (100,000 decisions: 119 -> 97 MB for the insert,
-- 0.70 -> 0.34 s; a million rows' file 248 -> 163 MB; docs/benchmarks.md, session 10).
-- Each row is still written once: storage.records.record_round refuses a round already
-- recorded and a clip twice in a round, storage.teacher_store.record_teacher_run a run's
-- outcomes twice and a clip twice for a question, and the checks
-- one_decision_per_clip_per_round and one_outcome_per_clip_per_question find any that got in.
-- The clip_id indexes (schema v8, for `mersemi audit clip`) stay.
DROP INDEX clip_decisions_clip_id;
CREATE TABLE clip_decisions_v9 (
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
    new_clip        BOOLEAN                  -- no earlier mining run decided the clip (v6)
);
INSERT INTO clip_decisions_v9
SELECT run_id, round, clip_id, decision, label, confidence, reason, votes, decided_by, decided_at, new_clip
FROM clip_decisions
ORDER BY run_id, round, clip_id;
DROP TABLE clip_decisions;
ALTER TABLE clip_decisions_v9 RENAME TO clip_decisions;
CREATE INDEX clip_decisions_clip_id ON clip_decisions (clip_id);

DROP INDEX teacher_outcomes_clip_id;
CREATE TABLE teacher_outcomes_v9 (
    run_id          VARCHAR NOT NULL,
    clip_id         VARCHAR NOT NULL,
    question        VARCHAR NOT NULL,        -- label, enrich
    teacher         VARCHAR NOT NULL,        -- gemini, replay, local
    cache_key       VARCHAR NOT NULL,        -- the teacher_answers row, when there is one
    outcome         VARCHAR NOT NULL,        -- answered, unparseable, refused, failed, not_asked
    from_cache      BOOLEAN NOT NULL,
    attempts        INTEGER NOT NULL
);
INSERT INTO teacher_outcomes_v9
SELECT run_id, clip_id, question, teacher, cache_key, outcome, from_cache, attempts
FROM teacher_outcomes
ORDER BY run_id, question, clip_id;
DROP TABLE teacher_outcomes;
ALTER TABLE teacher_outcomes_v9 RENAME TO teacher_outcomes;
CREATE INDEX teacher_outcomes_clip_id ON teacher_outcomes (clip_id);
