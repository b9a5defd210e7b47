-- Every change a re-ranking rule made to one clip's final label.
SELECT run_id, step, rule, before, after, detail, decided_at
FROM rule_changes
WHERE clip_id = $clip_id
ORDER BY decided_at, step
