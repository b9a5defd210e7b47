-- Schema version 6: each decision says whether its clip is new to mining, i.e. no earlier
-- mining run on the dataset decided it (clips added since the last run; a scheduled round
-- reports them). NULL on rows written before version 6.
ALTER TABLE clip_decisions ADD COLUMN new_clip BOOLEAN;
