-- loadtester schema, version 3: generator health, several targets, thresholds.
--
-- metric_windows.cpu_us: CPU time the worker process used in that second (user + system);
--   near 1,000,000 means the generator, not the target, may have set the pace.
-- test_runs.generator: JSON {max_schedule_lag_ms, max_loop_lag_ms, busy_seconds,
--   worker_seconds, saturated}.
-- test_runs.targets: JSON list, one object per target when a run had several
--   ({url, method, requests, successes, errors}).
-- test_runs.thresholds: JSON list of {expression, metric, op, limit, actual, passed}.

ALTER TABLE metric_windows ADD COLUMN cpu_us INTEGER;
ALTER TABLE test_runs ADD COLUMN generator TEXT;
ALTER TABLE test_runs ADD COLUMN targets TEXT;
ALTER TABLE test_runs ADD COLUMN thresholds TEXT;
