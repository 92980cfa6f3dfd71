-- loadtester schema, version 2: run groups.
--
-- One logical run can be made of several shards: the pods of a Kubernetes Indexed Job each
-- blast 1/n of the connections and rate into their own database file
-- (`loadtester blast ... --shard i/n --run-id ID`), and `loadtester merge` combines them into
-- one run.  The shards of one run share run_group; a merged run keeps the group and has no shard.

ALTER TABLE test_runs ADD COLUMN run_group TEXT;     -- --run-id; NULL for a plain run
ALTER TABLE test_runs ADD COLUMN shard TEXT          -- 'i/n', 0-based i: '0/4' .. '3/4'
    CHECK (shard IS NULL OR shard GLOB '[0-9]*/[0-9]*');

-- Partial: plain runs (run_group NULL) cost nothing; `WHERE run_group = ?` still uses it.
CREATE INDEX idx_test_runs_run_group ON test_runs (run_group) WHERE run_group IS NOT NULL;
