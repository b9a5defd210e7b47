-- One round's decisions (registered as relation `decisions`); a clip is decided once per round.
INSERT INTO clip_decisions (run_id, round, clip_id, decision, label, confidence, reason, votes,
                            decided_by, decided_at, new_clip)
SELECT $run_id, $round, clip_id, decision, label, confidence, reason, votes::JSON, $decided_by, $decided_at,
       new_clip
FROM decisions
