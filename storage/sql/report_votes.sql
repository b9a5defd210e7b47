-- Every voter's vote on every pool clip of every round of a mining run, one row per vote.
WITH decisions AS (
    SELECT round, clip_id, votes
    FROM clip_decisions
    WHERE run_id = $run_id AND votes IS NOT NULL
),
votes AS (
    SELECT d.round, d.clip_id, v.key AS voter,
           json_extract_string(v.value, '$.label') AS label,
           CAST(json_extract(v.value, '$.confidence') AS DOUBLE) AS confidence
    FROM decisions d, json_each(d.votes) v
),
final AS (
    SELECT * FROM votes WHERE label IS NOT NULL
)
SELECT * FROM final ORDER BY round, clip_id, voter
