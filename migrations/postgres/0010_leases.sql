-- Leases (issue #15): see migrations/sqlite/0010_leases.sql for what they mean.
CREATE TABLE leases (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node        TEXT COLLATE "C" NOT NULL,
    role        TEXT COLLATE "C" NOT NULL,
    host        TEXT COLLATE "C" NOT NULL DEFAULT '',
    pid         BIGINT NOT NULL,
    started_at  BIGINT NOT NULL,
    renewed_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX leases_expires ON leases (expires_at);

ALTER TABLE archive_jobs ADD COLUMN lease BIGINT;
ALTER TABLE backup_queue ADD COLUMN lease BIGINT;
ALTER TABLE volumes ADD COLUMN lease BIGINT;
ALTER TABLE job_runs ADD COLUMN lease BIGINT;
ALTER TABLE job_runs ADD COLUMN node TEXT COLLATE "C" NOT NULL DEFAULT '';
