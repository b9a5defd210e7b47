-- The latest decision about every clip a mining run decided ($round NULL; an accepted clip's
-- latest is its acceptance, as it leaves the pool), or its decisions in round $round, with the
-- clip's media, subtitle and dataset folder.
WITH latest AS (
    SELECT clip_id, max(round) AS round
    FROM clip_decisions
    WHERE run_id = $run_id AND ($round IS NULL OR round = $round)
    GROUP BY clip_id
),
decided AS (
    SELECT d.clip_id, d.round, d.decision, d.label, d.confidence, d.reason, d.votes
    FROM clip_decisions AS d
    JOIN latest USING (clip_id, round)
    WHERE d.run_id = $run_id
),
final AS (
    SELECT d.*, c.name, c.dataset, c.video_path, c.text, ds.root
    FROM decided AS d
    LEFT JOIN clips AS c USING (clip_id)
    LEFT JOIN datasets AS ds USING (dataset)
)
SELECT * FROM final ORDER BY name, clip_id
