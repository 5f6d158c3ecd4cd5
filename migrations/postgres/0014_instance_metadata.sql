-- WADO-RS /metadata (issue #16): see migrations/sqlite/0014_instance_metadata.sql.
CREATE TABLE instance_metadata (
    sop_instance_uid TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    json             TEXT NOT NULL
);
