-- WADO-RS /metadata (issue #16): each instance's data set below Pixel Data as a DICOM JSON
-- object (long binary values left out), written at ingest in the same transaction as the
-- instance's row, so that a study's metadata is served from here, whatever tier holds its
-- files. Instances ingested before this table, or whose header did not fit the received
-- head, have no row.
CREATE TABLE instance_metadata (
    sop_instance_uid TEXT PRIMARY KEY NOT NULL,
    json             TEXT NOT NULL
);
