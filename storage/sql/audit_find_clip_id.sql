-- A clip by its clip_id (the primary key: an index lookup).
SELECT *
FROM clips
WHERE clip_id = $clip
