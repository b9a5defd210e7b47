-- Human labels of a dataset's labelled clips, counted: how rare each label is.
SELECT label, count(*) AS n
FROM clips
WHERE dataset = $dataset AND split = 'train' AND label IS NOT NULL AND status <> 'removed'
GROUP BY label
