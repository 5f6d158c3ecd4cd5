-- The status page's history (issue #18, item 2): see migrations/sqlite/0015_status_samples.sql.
CREATE TABLE status_samples (
    taken_at   BIGINT NOT NULL,
    node       TEXT NOT NULL,
    series     TEXT NOT NULL,
    value      BIGINT NOT NULL
);
CREATE INDEX status_samples_taken ON status_samples (taken_at);
