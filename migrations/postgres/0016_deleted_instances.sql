-- Deleted instances (issue #18, item 3): see migrations/sqlite/0016_deleted_instances.sql.
CREATE TABLE deleted_instances (
    sop_instance_uid    TEXT PRIMARY KEY,
    study_instance_uid  TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    deleted_at          BIGINT NOT NULL,
    reason              TEXT NOT NULL DEFAULT '',
    offline_volumes     TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX deleted_instances_study ON deleted_instances (study_instance_uid);
