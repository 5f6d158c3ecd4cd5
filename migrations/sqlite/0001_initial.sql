-- The locator: patient/study/series/instance index, where each instance's bytes are, and an
-- append-only audit log. Text columns hold UTF-8 decoded from the declared character set;
-- empty string means "absent". Times are Unix milliseconds.

CREATE TABLE patients (
    id                   INTEGER PRIMARY KEY,
    patient_id           TEXT NOT NULL,
    issuer_of_patient_id TEXT NOT NULL DEFAULT '',
    patient_name         TEXT NOT NULL DEFAULT '',
    patient_birth_date   TEXT NOT NULL DEFAULT '',
    patient_sex          TEXT NOT NULL DEFAULT '',
    UNIQUE (patient_id, issuer_of_patient_id)
);

CREATE TABLE studies (
    id                       INTEGER PRIMARY KEY,
    patient_fk               INTEGER NOT NULL REFERENCES patients (id),
    study_instance_uid       TEXT NOT NULL UNIQUE,
    study_date               TEXT NOT NULL DEFAULT '',
    study_time               TEXT NOT NULL DEFAULT '',
    accession_number         TEXT NOT NULL DEFAULT '',
    study_id                 TEXT NOT NULL DEFAULT '',
    study_description        TEXT NOT NULL DEFAULT '',
    referring_physician_name TEXT NOT NULL DEFAULT ''
);
CREATE INDEX studies_patient ON studies (patient_fk);

CREATE TABLE series (
    id                  INTEGER PRIMARY KEY,
    study_fk            INTEGER NOT NULL REFERENCES studies (id),
    series_instance_uid TEXT NOT NULL UNIQUE,
    modality            TEXT NOT NULL DEFAULT '',
    series_number       INTEGER,
    series_description  TEXT NOT NULL DEFAULT '',
    body_part_examined  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX series_study ON series (study_fk);

CREATE TABLE instances (
    id                     INTEGER PRIMARY KEY,
    series_fk              INTEGER NOT NULL REFERENCES series (id),
    sop_instance_uid       TEXT NOT NULL UNIQUE,
    sop_class_uid          TEXT NOT NULL,
    instance_number        INTEGER,
    specific_character_set TEXT NOT NULL DEFAULT '',
    transfer_syntax_uid    TEXT NOT NULL,
    tier                   TEXT NOT NULL,
    location               TEXT NOT NULL,
    byte_offset            BIGINT NOT NULL DEFAULT 0,
    byte_length            BIGINT NOT NULL,
    crc32c                 BIGINT NOT NULL,
    received_at            BIGINT NOT NULL,
    source_ae              TEXT NOT NULL DEFAULT ''
);
CREATE INDEX instances_series ON instances (series_fk);
CREATE INDEX instances_tier ON instances (tier);

CREATE TABLE audit_log (
    id               INTEGER PRIMARY KEY,
    at               BIGINT NOT NULL,
    event            TEXT NOT NULL,
    ae               TEXT NOT NULL DEFAULT '',
    sop_instance_uid TEXT,
    detail           TEXT NOT NULL DEFAULT ''
);

-- Append-only: rows can be added, never changed or removed.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
