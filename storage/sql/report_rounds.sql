-- A mining run's rounds as recorded in their stage summaries, in round order.
WITH rounds AS (
    SELECT round, summary
    FROM stages
    WHERE run_id = $run_id AND stage = 'mine'
),
final AS (
    SELECT
        round,
        CAST(json_extract(summary, '$.pool') AS BIGINT) AS pool,
        CAST(json_extract(summary, '$.accepted') AS BIGINT) AS accepted,
        CAST(json_extract(summary, '$.cv_weighted_f1') AS DOUBLE) AS cv_weighted_f1,
        json_extract_string(summary, '$.stopped') AS stopped,
        CAST(json_extract(summary, '$.estimate.temperature') AS DOUBLE) AS temperature
    FROM rounds
)
SELECT * FROM final ORDER BY round
