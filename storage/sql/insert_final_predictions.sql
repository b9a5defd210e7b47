-- A finalize run's final labels (registered as relation `final`).
INSERT INTO final_predictions (run_id, clip_id, label, confidence, model_label, rules, decided_at)
SELECT $run_id, clip_id, label, confidence, model_label, rules, $decided_at
FROM final
