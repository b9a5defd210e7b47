-- The runs a report covers (a mining run and the finalize run built on it), oldest first.
WITH chosen AS (
    SELECT run_id, command, status, started_at, finished_at, params, code_version, flow_run_id, error
    FROM runs
    WHERE list_contains($run_ids, run_id)
),
final AS (
    SELECT * FROM chosen ORDER BY started_at
)
SELECT * FROM final
