-- The teacher run a mining run used: the newest completed teacher run of its dataset that had
-- finished when the mining run started (what flows/mine.py takes as its input).
SELECT run_id, finished_at
FROM stages
WHERE stage = 'teacher' AND status = 'completed'
  AND json_extract_string(summary, '$.dataset') = $dataset
  AND finished_at <= $before
ORDER BY finished_at DESC
LIMIT 1
