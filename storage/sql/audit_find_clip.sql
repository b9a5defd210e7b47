-- A clip by its name (a name may be taken in several datasets).
SELECT *
FROM clips
WHERE name = $clip
ORDER BY dataset
