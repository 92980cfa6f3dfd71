-- loadtester schema, version 7: per-target latency that merges, and counts per address.
--
-- test_runs.target_latency: for a run whose targets column holds per-target (or per journey
-- step) latency, each target's corrected-latency histogram, in the targets' order: a
-- little-endian uint32 length, then the histogram's bytes (as latency_hist holds them),
-- repeated.  The summary in targets does not merge; these do, exactly (loadtester merge).

ALTER TABLE test_runs ADD COLUMN target_latency BLOB;

-- test_runs.addresses: for a run with --resolve HOST:PORT:A,B (several addresses), JSON
-- [{address, connections, requests, successes, errors}], one per address, in the pin's order.

ALTER TABLE test_runs ADD COLUMN addresses TEXT;
