-- Every mining decision about one clip, in run and round order ($run_id NULL: every run).
-- The clip's few rows are found first (a filter on clip_id alone is a fast scan at a million
-- decisions); only they meet the runs table.
WITH mine AS MATERIALIZED (
    SELECT run_id, round, decision, label, confidence, reason, votes, decided_by, decided_at, new_clip
    FROM clip_decisions
    WHERE clip_id = $clip_id
),
final AS (
    SELECT d.*, r.started_at AS run_started_at
    FROM mine AS d
    JOIN runs AS r USING (run_id)
    WHERE $run_id IS NULL OR d.run_id = $run_id
)
SELECT run_id, round, decision, label, confidence, reason, votes, decided_by, decided_at, new_clip
FROM final
ORDER BY run_started_at, run_id, round
