-- Leases (issue #15): ownership of work by a lease in the locator instead of a local process
-- ID. Every server and every CLI run takes one lease when it opens the locator and renews it
-- by a heartbeat; its id is the fencing token (never reused). Times are the database's clock
-- (Unix milliseconds), so clock skew between nodes cannot make two holders of one claim.
-- A claim (an archive move, a backup claim, a volume being written, a job run) names the
-- lease of the process that owns it; it is another process's to recover once that lease has
-- expired. Commits that depend on a claim check, in the same transaction, that the lease
-- still holds.
CREATE TABLE leases (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    node        TEXT NOT NULL,           -- [node] id
    role        TEXT NOT NULL,           -- 'server' | 'cli'
    host        TEXT NOT NULL DEFAULT '',
    pid         BIGINT NOT NULL,         -- for the admin's eyes only
    started_at  BIGINT NOT NULL,
    renewed_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX leases_expires ON leases (expires_at);

ALTER TABLE archive_jobs ADD COLUMN lease BIGINT;
ALTER TABLE backup_queue ADD COLUMN lease BIGINT;
ALTER TABLE volumes ADD COLUMN lease BIGINT;
ALTER TABLE job_runs ADD COLUMN lease BIGINT;
ALTER TABLE job_runs ADD COLUMN node TEXT NOT NULL DEFAULT '';
