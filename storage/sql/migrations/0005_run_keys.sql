-- Schema version 5: a run's content key (its inputs' hashes, the code version and its
-- parameters), so that a re-run with the same key reuses a finished run or resumes a broken one.
ALTER TABLE runs ADD COLUMN cache_key VARCHAR;
