-- Schema version 8: point lookups for `mersemi audit clip` at a million decisions.
-- Clip ids are hashes, so rows of one clip are spread over every row group and zone maps
-- cannot skip any: a filter on clip_id scanned the whole table (10 ms per table at 1M rows).
-- These ART indexes find a clip's few rows directly (~1 ms); they cost ~0.6 s to build at 1M
-- rows and about 20 % more file.
CREATE INDEX clip_decisions_clip_id ON clip_decisions (clip_id);
CREATE INDEX teacher_answers_clip_id ON teacher_answers (clip_id);
CREATE INDEX teacher_outcomes_clip_id ON teacher_outcomes (clip_id);
CREATE INDEX clips_name ON clips (name);
