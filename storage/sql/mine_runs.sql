-- Completed mining runs of a dataset, newest first ($run_id NULL: all of them; else that one).
WITH rounds AS (
    SELECT run_id, max(round) AS rounds, max(finished_at) AS finished_at
    FROM stages
    WHERE stage = 'mine' AND json_extract_string(summary, '$.dataset') = $dataset
    GROUP BY run_id
),
final AS (
    SELECT r.run_id, r.rounds, r.finished_at, runs.status
    FROM rounds r JOIN runs USING (run_id)
    WHERE ($run_id IS NULL OR r.run_id = $run_id)
)
SELECT * FROM final ORDER BY finished_at DESC
