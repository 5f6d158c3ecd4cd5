-- Audit entries that are not about one instance (issue #18, item 6): a query, a retrieve
-- of a study, an admin command. They name the study they touched, if any, the caller's
-- network address and the outcome.
ALTER TABLE audit_log ADD COLUMN study_instance_uid TEXT;
ALTER TABLE audit_log ADD COLUMN address TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN outcome TEXT NOT NULL DEFAULT 'ok';
CREATE INDEX audit_log_study ON audit_log (study_instance_uid);
