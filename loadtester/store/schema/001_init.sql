-- loadtester schema, version 1.
--
-- Applied by loadtester.store.open_database() inside one transaction, which also sets
-- PRAGMA user_version = 1 and PRAGMA application_id = 0x4C545354 ('LTST').
-- The PipeOps Load Tester names are kept (test_runs, request_metrics and their columns) so
-- its users find their data; columns after the PipeOps ones are loadtester's own.
--
-- Units: latencies in the test_runs summary are milliseconds (REAL), as in PipeOps;
-- per-request and per-window values are integer microseconds (_us).
-- Times: ISO-8601 UTC text, e.g. 2025-11-25T01:40:00.123Z.

CREATE TABLE test_runs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused, so "run 12" stays run 12
    uuid            TEXT    NOT NULL UNIQUE,
    host            TEXT,
    mask_host       INTEGER NOT NULL DEFAULT 0,
    total_users     INTEGER,             -- connections
    ramp_up_sec     REAL,
    duration        REAL,                -- requested seconds; NULL when the run was -n COUNT
    status          TEXT    NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'completed', 'stopped', 'failed', 'interrupted')),
    started_at      TEXT    NOT NULL,
    completed_at    TEXT,
    total_requests  INTEGER,
    success_count   INTEGER,
    error_count     INTEGER,
    avg_latency     REAL,                -- ms
    min_latency     REAL,                -- ms
    max_latency     REAL,                -- ms
    rps             REAL,                -- completed responses / measured_duration
    method          TEXT,
    body            TEXT,
    headers         TEXT,                -- JSON object
    -- loadtester's own:
    url             TEXT,
    mode            TEXT CHECK (mode IS NULL OR mode IN ('closed', 'rate')),
    rate            REAL,                -- requests/s asked for (mode 'rate')
    workers         INTEGER,
    requests_limit  INTEGER,             -- -n COUNT
    p50             REAL,                -- ms, corrected latency
    p75             REAL,
    p90             REAL,
    p99             REAL,
    p999            REAL,
    stdev_latency   REAL,                -- ms
    bytes           INTEGER,             -- response bytes read
    label           TEXT,
    config          TEXT,                -- JSON: the validated run spec
    environment     TEXT,                -- JSON: host, CPUs, versions
    store_mode      TEXT CHECK (store_mode IS NULL OR store_mode IN ('requests', 'windows', 'none')),
    latency_hist    BLOB,                -- merged histogram, corrected latency (intended send time)
    service_hist    BLOB,                -- merged histogram, uncorrected latency (actual send time)
    status_codes    TEXT,                -- JSON object {"200": count, ...}
    errors_by_kind  TEXT,                -- JSON object {"timeout": count, ...}
    dropped_records INTEGER NOT NULL DEFAULT 0,   -- request rows the store could not keep up with
    stop_reason     TEXT,
    measured_duration REAL               -- seconds actually measured
);

CREATE INDEX idx_test_runs_started_at ON test_runs (started_at DESC);
-- (uuid is indexed by its UNIQUE constraint.)
-- Tiny partial index: open_database() looks for runs left 'running' by a dead writer.
CREATE INDEX idx_test_runs_running ON test_runs (status) WHERE status = 'running';


-- One row per run, worker and second of the run: exact percentiles over any time range come
-- from merging the histogram blobs of the rows in that range.
CREATE TABLE metric_windows (
    test_run_id INTEGER NOT NULL REFERENCES test_runs (id) ON DELETE CASCADE,
    worker      INTEGER NOT NULL,
    second      INTEGER NOT NULL,        -- 0-based second of the run
    requests    INTEGER NOT NULL,        -- completed attempts: responses + transport errors
    successes   INTEGER NOT NULL,        -- responses with status 100-399
    errors      INTEGER NOT NULL,        -- transport errors (connect, timeout, read, write, parse)
    error_kinds TEXT,                    -- JSON object {"timeout": count, ...}, non-zero kinds only
    bytes       INTEGER NOT NULL,
    status_codes TEXT,                   -- JSON object {"200": count, ...}
    latency_hist BLOB,                   -- corrected
    service_hist BLOB,                   -- uncorrected
    loop_lag_us INTEGER,                 -- generator (event loop) lag
    max_wait_us INTEGER,                 -- largest wait behind the timetable (open loop)
    in_flight   INTEGER,
    PRIMARY KEY (test_run_id, worker, second)
) WITHOUT ROWID;


-- Requests, one row each, stored as small as SQLite allows. Read them through the VIEW
-- request_metrics below (the PipeOps name); these two tables are its storage:
--
-- request_records: one row per request, keyed by a database-wide integer id; each stored batch
--   takes consecutive ids.  (A rowid table fills its pages completely on append, and its key is
--   the cheapest index there is: about 22-24 bytes per request on disk, all included.)
--   code packs status | error << 16 | worker << 24: exactly the last 4 bytes of the engine's
--   24-byte record ("<QIIIHBB"), so rows are bound straight from struct.iter_unpack.
--   timestamp: microseconds since the run's start (the worker's start; intended send time);
--   latency: corrected latency in microseconds; wait_us: intended -> actual send time.
-- request_batches: one row per stored batch (thousands of requests): the run that ids
--   first_id..last_id belong to, and the run's sequence number (seq) of first_id.
-- The views are read-only; delete requests by deleting their run (or its request_batches rows).
CREATE TABLE request_records (
    id        INTEGER PRIMARY KEY,       -- explicit, so VACUUM keeps it
    timestamp INTEGER NOT NULL,
    latency   INTEGER NOT NULL,
    wait_us   INTEGER NOT NULL,
    bytes     INTEGER NOT NULL,
    code      INTEGER NOT NULL
);

CREATE TABLE request_batches (
    test_run_id INTEGER NOT NULL REFERENCES test_runs (id) ON DELETE CASCADE,
    first_seq   INTEGER NOT NULL,
    first_id    INTEGER NOT NULL,
    last_id     INTEGER NOT NULL,
    CHECK (last_id >= first_id),
    PRIMARY KEY (test_run_id, first_seq)
) WITHOUT ROWID;

-- Deleting a run (ON DELETE CASCADE) deletes its batches, and each batch its request rows.
CREATE TRIGGER request_batches_delete AFTER DELETE ON request_batches
BEGIN
    DELETE FROM request_records WHERE id BETWEEN old.first_id AND old.last_id;
END;

-- The PipeOps table, as a view: one row per request.
--   seq        per-run sequence number (0-based, across workers, in storage order)
--   timestamp  INTEGER microseconds since the run's start (the worker's start; see above)
--   latency    INTEGER microseconds, corrected (from the intended send time)
--   wait_us    INTEGER microseconds between intended and actual send time
--   success    1 when error = 0 and 100 <= status_code < 400
--   error      0 none, 1 connect, 2 timeout, 3 read, 4 write, 5 parse
-- Query it by test_run_id: that is a primary-key lookup plus id-range scans.
CREATE VIEW request_metrics AS
SELECT b.test_run_id                                   AS test_run_id,
       b.first_seq + (r.id - b.first_id)               AS seq,
       r.timestamp                                     AS timestamp,
       r.latency                                       AS latency,
       r.wait_us                                       AS wait_us,
       ((r.code & 0xFF0000) = 0
        AND (r.code & 0xFFFF) BETWEEN 100 AND 399)     AS success,
       r.code & 0xFFFF                                 AS status_code,
       (r.code >> 16) & 0xFF                           AS error,
       r.bytes                                         AS bytes,
       (r.code >> 24) & 0xFF                           AS worker
FROM request_batches AS b
JOIN request_records AS r ON r.id BETWEEN b.first_id AND b.last_id;

-- PipeOps-style units: latency in milliseconds, absolute ISO-8601 UTC timestamp.
CREATE VIEW request_metrics_ms AS
SELECT m.test_run_id                                   AS test_run_id,
       m.seq                                           AS seq,
       strftime('%Y-%m-%dT%H:%M:%fZ',
                julianday(t.started_at) + m.timestamp / 86400000000.0) AS timestamp,
       m.latency / 1000.0                              AS latency,
       m.wait_us / 1000.0                              AS wait_ms,
       m.success                                       AS success,
       m.status_code                                   AS status_code,
       m.error                                         AS error,
       m.bytes                                         AS bytes,
       m.worker                                        AS worker
FROM request_metrics AS m
JOIN test_runs AS t ON t.id = m.test_run_id;
