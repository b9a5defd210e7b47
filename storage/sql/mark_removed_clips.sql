-- Clips of the dataset that the new registry no longer lists are kept, marked removed.
UPDATE clips
SET status = 'removed',
    reason = 'no longer listed in the dataset (ingest run ' || $run_id || ')',
    last_changed_run = $run_id
WHERE dataset = $dataset
  AND status <> 'removed'
  AND clip_id NOT IN (SELECT clip_id FROM registry)
