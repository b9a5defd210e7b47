-- Invariant: a clip that is not ok says what is wrong.
SELECT clip_id, name, status
FROM clips
WHERE status <> 'ok' AND (reason IS NULL OR trim(reason) = '')
