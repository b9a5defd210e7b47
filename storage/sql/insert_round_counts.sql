-- A round's decisions counted per label, decision and kind of reason, written in the same
-- transaction as the decisions. The kind is read from the markers tasks/mine.py writes into
-- reasons, latest step first (a discarded round, then the selection, then the policy);
-- anything else is 'other', never dropped. An accepted clip's kind needs no string test (a
-- discarded round's clips are all rejected).
WITH decided AS (
    SELECT label, decision,
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
    WHERE run_id = $run_id AND round = $round
),
final AS (
    SELECT $run_id AS run_id, $round AS round, label, decision, kind, count(*) AS n
    FROM decided
    GROUP BY ALL
)
INSERT INTO round_counts SELECT * FROM final
