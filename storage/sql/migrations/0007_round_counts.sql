-- Schema version 7: what the audit reads at scale without scanning every decision.
-- round_counts: a round's decisions per label, decision and kind of reason, written with the
-- round (storage/sql/insert_round_counts.sql), so `mersemi audit rounds` reads a few hundred
-- rows instead of classifying a million reasons. Rounds recorded before v7 are counted here.
CREATE TABLE round_counts (
    run_id          VARCHAR NOT NULL,
    round           INTEGER NOT NULL,
    label           VARCHAR,
    decision        VARCHAR NOT NULL,
    kind            VARCHAR NOT NULL,        -- kind of reason (see insert_round_counts.sql)
    n               BIGINT NOT NULL
);

INSERT INTO round_counts
SELECT run_id, round, label, decision, kind, count(*) AS n
FROM (
    SELECT run_id, round, label, decision,
        CASE
            WHEN decision = 'accepted' THEN 'accepted'
            WHEN contains(reason, '; round discarded:') THEN 'round discarded'
            WHEN contains(reason, '; balance:') THEN 'balance'
            WHEN contains(reason, '; precision: estimated') THEN 'estimated precision below target'
            WHEN contains(reason, 'vote: tie') THEN 'vote: tie'
            WHEN contains(reason, ', quorum ') THEN 'vote: below quorum'
            WHEN contains(reason, 'vote: no vote') THEN 'vote: no vote above the floor'
            WHEN contains(reason, 'consensus: teacher says') THEN 'consensus: teacher disagrees'
            WHEN contains(reason, 'consensus: no teacher') THEN 'consensus: no teacher answer'
            WHEN contains(reason, ' agreed but ') THEN 'consensus: below threshold'
            WHEN contains(reason, 'consensus: teacher confidence') THEN 'consensus: teacher below floor'
            WHEN contains(reason, 'consensus: no ') THEN 'consensus: no baseline vote'
            ELSE 'other'
        END AS kind
    FROM clip_decisions
)
GROUP BY ALL;
