-- Invariant: the teacher's answer cache has one row per cache key (schema v10 has no key
-- that refuses a second: storage.teacher_store.record_answers replaces a key's row).
SELECT cache_key, count(*) AS n
FROM teacher_answers
GROUP BY ALL
HAVING count(*) > 1
