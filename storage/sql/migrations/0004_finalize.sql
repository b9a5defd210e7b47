-- Schema version 4: the final stage (second-stage training, ensemble, re-ranking).

-- Every change a re-ranking rule made to a final prediction (a clip no rule changed has none).
CREATE TABLE rule_changes (
    run_id          VARCHAR NOT NULL,
    clip_id         VARCHAR NOT NULL,
    step            INTEGER NOT NULL,        -- order of the rule in the run's rule list
    rule            VARCHAR NOT NULL,        -- name and parameters, e.g. demote(label=worried,margin=0.1)
    before          VARCHAR NOT NULL,
    after           VARCHAR NOT NULL,
    detail          VARCHAR NOT NULL,
    decided_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, clip_id, step)
);

-- The final label of every scored candidate clip of a finalize run.
CREATE TABLE final_predictions (
    run_id          VARCHAR NOT NULL,
    clip_id         VARCHAR NOT NULL,
    label           VARCHAR NOT NULL,
    confidence      DOUBLE,
    model_label     VARCHAR NOT NULL,        -- the ensemble's label before re-ranking
    rules           VARCHAR NOT NULL,        -- rules that changed it, ';'-joined ('' when none)
    decided_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, clip_id)
);

-- Human labels that every other source contradicted (label refinement). The label in `clips`
-- is never changed; `action` says whether the second stage trained the clip at lower weight.
CREATE TABLE label_flags (
    run_id          VARCHAR NOT NULL,
    clip_id         VARCHAR NOT NULL,
    label           VARCHAR NOT NULL,        -- the human label
    alternative     VARCHAR NOT NULL,        -- what most sources said
    n_sources       INTEGER NOT NULL,
    sources         JSON NOT NULL,           -- {source: {label, confidence}}
    action          VARCHAR NOT NULL,        -- flagged, down-weighted
    weight          DOUBLE NOT NULL,
    flagged_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, clip_id)
);
