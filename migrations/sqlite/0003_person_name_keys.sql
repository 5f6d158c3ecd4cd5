-- Component-wise Person Name matching (see src/model/person_name.rs): a search key beside each
-- stored name, every component group padded to five components and the value to three
-- groups. Rows written before this migration get their keys when the locator opens.

ALTER TABLE patients ADD COLUMN patient_name_key TEXT NOT NULL DEFAULT '';
ALTER TABLE studies ADD COLUMN referring_physician_name_key TEXT NOT NULL DEFAULT '';
CREATE INDEX patients_name_key ON patients (patient_name_key);
