-- Corrections (issue #18, item 5): when a study's patient or study attributes were last
-- changed after the fact (`strata update`, or a re-sent object under
-- `duplicate_policy = overwrite`). NULL: never; its instances are sent as stored. Otherwise
-- retrieves send its instances with the index's values (the stored bytes stay as received).
ALTER TABLE studies ADD COLUMN corrected_at BIGINT;
