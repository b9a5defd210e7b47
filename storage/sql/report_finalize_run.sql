-- The newest completed finalize run built on a mining run (its summary names the mining run).
WITH built AS (
    SELECT s.run_id, s.finished_at
    FROM stages s JOIN runs r USING (run_id)
    WHERE s.stage = 'finalize' AND r.status = 'completed'
      AND json_extract_string(s.summary, '$.mine_run') = $mine_run
),
final AS (
    SELECT * FROM built ORDER BY finished_at DESC LIMIT 1
)
SELECT * FROM final
