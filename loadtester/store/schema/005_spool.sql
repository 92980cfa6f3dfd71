-- loadtester schema, version 5: the writer's spool survives kill -9.
--
-- Request records and windows land first in a named spool file next to the database
-- (<db>.spool-<run uuid>) and the writer thread moves them in.  test_runs.spooled: the spool's
-- logical offset up to which the run's records are stored, updated in the same transaction as
-- those rows; the next open after a kill replays what is past it (see store/spool.py).

ALTER TABLE test_runs ADD COLUMN spooled INTEGER;
