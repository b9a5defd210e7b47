-- Mining runs, newest first, with their dataset and recorded rounds ($run_id NULL: all of
-- them; else that one). A run still in progress is listed too: the audit reads while it runs.
WITH mine AS (
    SELECT run_id, status, started_at, finished_at, error,
           json_extract_string(params, '$.dataset') AS param_dataset
    FROM runs
    WHERE command = 'mine' AND ($run_id IS NULL OR run_id = $run_id)
),
rounds AS (
    SELECT run_id, count(*) AS rounds, any_value(json_extract_string(summary, '$.dataset')) AS dataset
    FROM stages
    WHERE stage = 'mine' AND run_id IN (SELECT run_id FROM mine)
    GROUP BY run_id
),
final AS (
    SELECT m.run_id, m.status, m.started_at, m.finished_at, m.error,
           coalesce(r.dataset, m.param_dataset) AS dataset, coalesce(r.rounds, 0) AS rounds
    FROM mine AS m
    LEFT JOIN rounds AS r USING (run_id)
)
SELECT * FROM final ORDER BY started_at DESC, run_id DESC
