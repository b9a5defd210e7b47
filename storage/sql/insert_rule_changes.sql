-- A finalize run's rule changes (registered as relation `changes`, with a `step` column).
INSERT INTO rule_changes (run_id, clip_id, step, rule, before, after, detail, decided_at)
SELECT $run_id, clip_id, step, rule, before, after, detail, $decided_at
FROM changes
