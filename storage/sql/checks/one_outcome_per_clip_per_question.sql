-- Invariant: a teacher run has one outcome per clip and question.
SELECT run_id, clip_id, question, count(*) AS n
FROM teacher_outcomes
GROUP BY ALL
HAVING count(*) > 1
