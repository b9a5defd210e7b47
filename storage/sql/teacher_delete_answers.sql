-- The cached rows of the keys about to be recorded again (registered as relation `answers`):
-- a failed row is replaced when a later run gets an answer for the same key. The insert that
-- follows (teacher_upsert_answers) is in the same transaction.
DELETE FROM teacher_answers
WHERE cache_key IN (SELECT cache_key FROM answers)
