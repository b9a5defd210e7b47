-- Clips a teacher run's outcomes name more than once for one question (checked inside the
-- transaction that inserted them, which is then undone): how many, and one of them.
SELECT count(*) AS n, min(clip_id) AS clip_id, min(question) AS question
FROM (SELECT clip_id, question
      FROM teacher_outcomes
      WHERE run_id = $run_id
      GROUP BY clip_id, question
      HAVING count(*) > 1)
