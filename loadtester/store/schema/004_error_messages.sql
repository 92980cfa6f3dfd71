-- loadtester schema, version 4: why requests failed, not only how many.
--
-- test_runs.error_messages: JSON {error kind: the first message of that kind}, e.g.
--   {"connect": "connection refused 127.0.0.1:8080", "status": "HTTP 503"}.
-- test_runs.worker_errors: JSON list of one line per worker that died or failed
--   ("worker 1 was killed by SIGKILL in second 3; ...").

ALTER TABLE test_runs ADD COLUMN error_messages TEXT;
ALTER TABLE test_runs ADD COLUMN worker_errors TEXT;
