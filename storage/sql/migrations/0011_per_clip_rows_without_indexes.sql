-- Schema version 11: the two tables written a row per pool clip lose their clip_id indexes
-- (v8). DuckDB loads an index whole to commit rows into it, so recording a round or a teacher
-- run's outcomes grew with every decision and outcome the catalog already held: a round of
-- 100,000 decisions into a catalog of 2.2 million peaked +107..+123 MB, of which the commit
-- (the index) +50..+67; without the index +55..+60, the commit +3 (docs/benchmarks.md,
-- session 17). `mersemi audit clip` finds a clip's rows by scanning: a round's decisions are
-- written in clip_id order (the pool is sorted), so each row group's min/max of clip_id skips
-- all but the row groups that can hold the clip.
DROP INDEX clip_decisions_clip_id;
DROP INDEX teacher_outcomes_clip_id;
