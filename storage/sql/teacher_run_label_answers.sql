-- What mining and finalize read of a teacher run: each pool clip's answer to the label
-- question (without the reasoning and raw text, which the audit reads), streamed in no
-- particular order (sorting held every row; the votes made of it are sorted by clip_id).
SELECT o.clip_id, o.question, a.status, a.label, a.scores
FROM teacher_outcomes AS o
LEFT JOIN teacher_answers AS a USING (cache_key)
WHERE o.run_id = $run_id AND o.question = 'label'
