-- Resolution levels of more than one version of an instance's bytes (issue #19, item 1): a
-- near-line `j2k-roi` copy is encoded resolution first too, so its levels are kept beside
-- those of the primary, each for the bytes whose CRC-32C is `crc32c`. A thumbnail of an
-- instance whose only surviving copy is that lossy one then reads the copy's first bytes.
CREATE TABLE resolution_levels_by_bytes (
    sop_instance_uid TEXT NOT NULL,
    crc32c           BIGINT NOT NULL,
    frames           TEXT NOT NULL,
    PRIMARY KEY (sop_instance_uid, crc32c)
);
INSERT INTO resolution_levels_by_bytes (sop_instance_uid, crc32c, frames)
    SELECT sop_instance_uid, crc32c, frames FROM resolution_levels;
DROP TABLE resolution_levels;
ALTER TABLE resolution_levels_by_bytes RENAME TO resolution_levels;
