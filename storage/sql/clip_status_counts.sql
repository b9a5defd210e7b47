SELECT dataset, split, status, count(*) AS n_clips
FROM clips
GROUP BY ALL
ORDER BY ALL
