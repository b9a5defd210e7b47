-- Human labels a finalize run flagged, counted by human label, what the other sources said
-- and what was done about it.
WITH flags AS (
    SELECT label, alternative, action
    FROM label_flags
    WHERE run_id = $run_id
),
final AS (
    SELECT label, alternative, action, count(*) AS n
    FROM flags
    GROUP BY label, alternative, action
)
SELECT * FROM final ORDER BY label, alternative, action
