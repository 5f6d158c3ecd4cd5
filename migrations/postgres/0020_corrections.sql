-- Corrections (issue #18, item 5): see migrations/sqlite/0020_corrections.sql.
ALTER TABLE studies ADD COLUMN corrected_at BIGINT;
