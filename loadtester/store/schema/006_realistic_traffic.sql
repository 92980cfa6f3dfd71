-- loadtester schema, version 6: data-driven requests (issue 15).
--
-- What shaped the requests (data file name, rows and sha256, weights, journey steps, think
-- time) is in test_runs.config, under "traffic"; per-target counts (and per-step latency) in
-- test_runs.targets.  A run with --data also keeps what each request variant got:
-- test_runs.variants: JSON {count, min, max, unserved}: how often a variant was served.
-- test_runs.variant_counts: zlib-compressed, per variant in send order, the data file's row
--   index (int64) and [responses, successes, errors] (int64 each), little-endian, then the
--   variants' request lines (METHOD target), newline-separated, in the same order.

ALTER TABLE test_runs ADD COLUMN variants TEXT;
ALTER TABLE test_runs ADD COLUMN variant_counts BLOB;
