-- The human-labelled clips training used: labelled train clips of a dataset that are usable.
WITH labelled AS (
    SELECT clip_id, name, label
    FROM clips
    WHERE dataset = $dataset AND split = 'train' AND label IS NOT NULL
      AND status IN ('ok', 'degraded')
),
final AS (
    SELECT * FROM labelled ORDER BY clip_id
)
SELECT * FROM final
