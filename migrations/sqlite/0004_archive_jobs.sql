-- Multi-step moves between tiers (archive a study, fold late arrivals in, restore a study)
-- as a journal, so an interrupted one is finished or undone on the next run:
--   writing   : the container may exist (temporary or published) but nothing points at it;
--               recovery deletes it.
--   committed : the locator points at the new copies; `old_locations` (JSON array of
--               [tier, location]) are the copies to delete once nothing references them.
CREATE TABLE archive_jobs (
    id                 INTEGER PRIMARY KEY,
    kind               TEXT NOT NULL,          -- 'archive' | 'restore'
    study_instance_uid TEXT NOT NULL,
    container          TEXT NOT NULL,          -- the container written (archive) or read (restore)
    state              TEXT NOT NULL,          -- 'writing' | 'committed'
    old_locations      TEXT NOT NULL DEFAULT '[]',
    started_at         BIGINT NOT NULL,
    owner_pid          INTEGER NOT NULL        -- recovery leaves a live process's jobs alone
);
CREATE INDEX instances_location ON instances (location);
