-- Backup and recovery (issue #7).
--
-- `copies`: every instance's extra copies beside its primary (which stays in `instances`,
-- tier online|archive). A near-line copy lives in an S-DICOM container below the near-line
-- folder (`location` = container name, `member` empty); an offline copy in a volume file
-- (`location` = volume id, `member` = member name inside it). `byte_offset`/`byte_length`
-- say where the Part-10 bytes are inside `location`, `crc32c` checks them. A row is written
-- only after its bytes are durable and verified.
CREATE TABLE copies (
    id                 INTEGER PRIMARY KEY,
    sop_instance_uid   TEXT NOT NULL,
    kind               TEXT NOT NULL,          -- 'nearline' | 'offline'
    location           TEXT NOT NULL,
    member             TEXT NOT NULL DEFAULT '',
    byte_offset        BIGINT NOT NULL,
    byte_length        BIGINT NOT NULL,
    crc32c             BIGINT NOT NULL,
    format             TEXT NOT NULL,          -- 'original' (so far)
    created_at         BIGINT NOT NULL,
    UNIQUE (sop_instance_uid, kind, location)
);
CREATE INDEX copies_location ON copies (location);

-- Studies waiting for a near-line copy. `container` is set while a process writes one (what
-- recovery deletes if the copy was never recorded), with that process's id.
CREATE TABLE backup_queue (
    study_instance_uid TEXT PRIMARY KEY,
    enqueued_at        BIGINT NOT NULL,
    reason             TEXT NOT NULL,          -- 'archived' | 'received' | 'repair'
    container          TEXT,
    owner_pid          INTEGER
);

-- Instances whose primary copy was found missing or damaged (by a read or by verify), to be
-- re-created online from a good copy.
CREATE TABLE repairs (
    sop_instance_uid   TEXT PRIMARY KEY,
    detected_at        BIGINT NOT NULL,
    reason             TEXT NOT NULL
);
