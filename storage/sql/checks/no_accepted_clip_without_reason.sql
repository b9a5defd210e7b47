-- Invariant: every accepted pseudo-label says why, and names its label.
SELECT run_id, round, clip_id
FROM clip_decisions
WHERE decision = 'accepted' AND (trim(reason) = '' OR label IS NULL)
