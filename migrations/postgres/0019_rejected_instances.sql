-- Rejected instances (issue #18, IOCM): see migrations/sqlite/0019_rejected_instances.sql.
CREATE TABLE rejected_instances (
    sop_instance_uid    TEXT PRIMARY KEY,
    study_instance_uid  TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    rejected_at         BIGINT NOT NULL,
    code                TEXT NOT NULL,
    note_uid            TEXT NOT NULL,
    tier                TEXT NOT NULL,
    location            TEXT NOT NULL,
    byte_length         BIGINT NOT NULL,
    nearline            TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX rejected_instances_due ON rejected_instances (rejected_at);
