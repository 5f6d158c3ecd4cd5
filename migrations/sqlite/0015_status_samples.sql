-- The status page's history (issue #18, item 2): every server samples the tiers, the queues
-- and its own count of instances ingested every `[status] sample_secs`, one row per series,
-- and deletes rows older than `[status] keep_hours` as it goes, so the table stays bounded
-- (48 hours of one sample a minute: about 2,900 rows per series and node). Not copied by
-- `strata locator migrate`: the history restarts on the new locator.
CREATE TABLE status_samples (
    taken_at   BIGINT NOT NULL,   -- Unix milliseconds
    node       TEXT NOT NULL,     -- `[node] id` of the server that took it
    series     TEXT NOT NULL,     -- e.g. 'tier_bytes:online', 'queue:backup', 'ingested'
    value      BIGINT NOT NULL
);
CREATE INDEX status_samples_taken ON status_samples (taken_at);
