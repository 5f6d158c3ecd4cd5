-- Audit entries that are not about one instance: see migrations/sqlite/0018_audit_context.sql.
ALTER TABLE audit_log ADD COLUMN study_instance_uid TEXT COLLATE "C";
ALTER TABLE audit_log ADD COLUMN address TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN outcome TEXT COLLATE "C" NOT NULL DEFAULT 'ok';
CREATE INDEX audit_log_study ON audit_log (study_instance_uid);
