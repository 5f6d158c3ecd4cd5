-- Rejected instances (issue #18, IOCM): one row per SOP Instance UID hidden by a received
-- Key Object Selection rejection note (PS3.16 CID 7011), written in the transaction that
-- takes the instance out of the index (so C-FIND, QIDO-RS, C-MOVE/C-GET and WADO-RS stop
-- seeing it at once). Its bytes stay where they were (`tier`, `location`, the near-line
-- containers in `nearline`, a JSON array) until `[lifecycle] rejected_keep_days` after
-- `rejected_at`; then the lifecycle pass deletes them as `strata delete` would and drops
-- the row in the transaction that journals that delete.
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
