-- How many outcomes a teacher run already has (recording them again would count its clips twice).
SELECT count(*) AS n FROM teacher_outcomes WHERE run_id = $run_id
