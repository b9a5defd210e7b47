INSERT INTO runs (run_id, command, status, started_at, params, code_version, flow_run_id, cache_key)
VALUES ($run_id, $command, 'running', $started_at, $params, $code_version, $flow_run_id, $cache_key)
