-- Schema version 9: clip_decisions without its primary key (run_id, round, clip_id).
-- A round's decisions are recorded in one transaction, and DuckDB builds that transaction's
-- part of every index in memory beside its rows: the key's index was ~0.25 KB per decision
-- (100,000 decisions: 119 -> 97 MB for the insert, 0.70 -> 0.34 s, a million rows' file
-- 248 -> 163 MB; docs/benchmarks.md, session 10). A clip is still decided once per round:
-- storage.records.record_round refuses a round already recorded and a clip twice in a round,
-- and the check one_decision_per_clip_per_round finds any that got in. The clip_id index
-- (schema v8, for `mersemi audit clip`) stays.
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
