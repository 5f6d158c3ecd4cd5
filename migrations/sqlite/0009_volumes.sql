-- Offline volumes (issue #7): ustar files with a manifest and checksums, written by
-- `strata backup export-volume`. A row is journaled ('writing', with the writer's process id)
-- before the file is written, so recovery can delete what a killed export left; it turns
-- 'complete' in the same transaction that records the volume's `copies` (kind 'offline',
-- location = volume id, member = path inside the volume), after the file is durable and
-- verified.
CREATE TABLE volumes (
    id          TEXT PRIMARY KEY,          -- file name without `.tar`
    state       TEXT NOT NULL,             -- 'writing' | 'complete'
    directory   TEXT NOT NULL,             -- where it was written (volumes move to tape)
    size        BIGINT NOT NULL DEFAULT 0,
    instances   BIGINT NOT NULL DEFAULT 0,
    sha256      TEXT NOT NULL DEFAULT '',  -- of the whole file
    created_at  BIGINT NOT NULL,
    owner_pid   INTEGER
);

-- "Everything not yet on a volume" looks up offline copies per instance.
CREATE INDEX copies_instance_kind ON copies (sop_instance_uid, kind);

-- When a read or a scrub last found a copy missing or damaged (NULL: not known bad). C-FIND's
-- Instance Availability only counts copies not known bad.
ALTER TABLE copies ADD COLUMN bad_since BIGINT;
