-- The clips that mining runs on a dataset other than $run_id have decided (in any round):
-- a clip outside this set is new to mining.
WITH other_mine_runs AS (
    SELECT DISTINCT run_id
    FROM stages
    WHERE stage = 'mine' AND run_id <> $run_id
      AND json_extract_string(summary, '$.dataset') = $dataset
),
final AS (
    SELECT DISTINCT d.clip_id
    FROM clip_decisions d
    JOIN other_mine_runs USING (run_id)
)
SELECT clip_id FROM final ORDER BY clip_id
