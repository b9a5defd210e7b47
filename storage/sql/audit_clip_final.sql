-- One clip's final label in every finalize run, with the re-ranking rules that changed it.
SELECT f.run_id, f.label, f.confidence, f.model_label, f.rules, f.decided_at
FROM final_predictions AS f
WHERE f.clip_id = $clip_id
ORDER BY f.decided_at
