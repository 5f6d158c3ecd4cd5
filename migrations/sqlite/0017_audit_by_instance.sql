-- `strata audit --study` looks the audit log up by SOP Instance UID (issue #18, item 6).
CREATE INDEX audit_log_instance ON audit_log (sop_instance_uid);
