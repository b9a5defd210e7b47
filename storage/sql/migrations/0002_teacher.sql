-- mersemi catalog, schema version 2: the teacher stage.

-- What was asked: 'label' (label and scores) or 'enrich' (a subtitle rewritten with the
-- emotional cues the model perceives; the text is in raw_text).
ALTER TABLE teacher_answers ADD COLUMN question VARCHAR DEFAULT 'label';
-- The model's own account of each modality's share in its decision, when it gave one.
ALTER TABLE teacher_answers ADD COLUMN modality_shares JSON;

-- Every pool clip of a teacher run and what became of it, so that the clips a budget left
-- unasked are on record, not only the answers.
CREATE TABLE teacher_outcomes (
    run_id          VARCHAR NOT NULL,
    clip_id         VARCHAR NOT NULL,
    question        VARCHAR NOT NULL,        -- label, enrich
    teacher         VARCHAR NOT NULL,        -- gemini, replay, local
    cache_key       VARCHAR NOT NULL,        -- the teacher_answers row, when there is one
    outcome         VARCHAR NOT NULL,        -- answered, unparseable, refused, failed, not_asked
    from_cache      BOOLEAN NOT NULL,
    attempts        INTEGER NOT NULL,
    PRIMARY KEY (run_id, clip_id, question)
);
