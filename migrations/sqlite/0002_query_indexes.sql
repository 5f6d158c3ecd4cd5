-- Indexes for C-FIND at a large hospital's scale (millions of instances, tens of thousands
-- of patients). Equality and prefix-wildcard lookups on the keys viewers and RIS systems
-- send most; the date index also serves "newest first" ordering.

CREATE INDEX patients_name ON patients (patient_name);
CREATE INDEX patients_birth_date ON patients (patient_birth_date);
CREATE INDEX studies_date_time ON studies (study_date, study_time);
CREATE INDEX studies_accession ON studies (accession_number);
CREATE INDEX series_modality ON series (modality);
