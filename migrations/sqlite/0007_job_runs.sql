-- Job history and persistent counters (issue #7, items 5 and 6). Independent of 0006.
--
-- `job_runs`: one row per run of a long job, by the CLI or by the server's workers. A row is
-- inserted with outcome 'running' when the job starts and finished with 'ok' or 'failed',
-- `finished_at` and the job's JSON summary. A row left 'running' by a process that no longer
-- exists is shown (and later settled) as 'interrupted'. Old rows are pruned per job, so the
-- table stays bounded.
CREATE TABLE job_runs (
    id                 INTEGER PRIMARY KEY,
    job                TEXT NOT NULL,          -- 'tier' | 'backup' | 'verify' | 'import' | 'restore'
                                               -- | 'repair' | 'export-volume' | 'import-volume'
    started_at         BIGINT NOT NULL,        -- Unix milliseconds
    finished_at        BIGINT,                 -- NULL while running (or when interrupted)
    outcome            TEXT NOT NULL,          -- 'running' | 'ok' | 'failed' | 'interrupted'
    summary            TEXT,                   -- the job's JSON summary, once finished
    pid                INTEGER NOT NULL,
    "trigger"          TEXT NOT NULL           -- 'cli' | 'server'
);
CREATE INDEX job_runs_job_started ON job_runs (job, started_at);

-- Named monotonic counters shared by every process on the locator (e.g. 'read_fallbacks':
-- reads answered from a backup copy because the primary was missing or damaged).
CREATE TABLE counters (
    name               TEXT PRIMARY KEY,
    value              BIGINT NOT NULL
);
