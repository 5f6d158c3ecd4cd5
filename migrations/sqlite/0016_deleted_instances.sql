-- Deleted instances (issue #18, item 3): one row per SOP Instance UID removed by
-- `strata delete`, written in the transaction that removes it from the index. It is the
-- locator's word that the offline copies listed in `offline_volumes` (JSON array of volume
-- ids: a volume cannot be rewritten) are deleted: `strata backup import-volume` leaves them
-- out of those volumes (a UID stored again later and exported to a new volume comes back
-- from that one).
CREATE TABLE deleted_instances (
    sop_instance_uid    TEXT PRIMARY KEY,
    study_instance_uid  TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    deleted_at          BIGINT NOT NULL,
    reason              TEXT NOT NULL DEFAULT '',
    offline_volumes     TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX deleted_instances_study ON deleted_instances (study_instance_uid);
