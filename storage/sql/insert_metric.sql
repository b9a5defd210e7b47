INSERT INTO metrics (run_id, stage, round, name, scope, value, recorded_at)
VALUES ($run_id, $stage, $round, $name, $scope, $value, $recorded_at)
ON CONFLICT DO UPDATE SET value = excluded.value, recorded_at = excluded.recorded_at
