-- JPEG 2000 ROI near-line copies (issue #7): a copy's bytes are no longer always the
-- instance's bytes. `source_crc32c` is the CRC-32C of the primary the copy was made from
-- (equal to `crc32c` for `format = 'original'` copies), so a copy of an older version of an
-- instance is never mistaken for a copy of the current one, whatever its format.
ALTER TABLE copies ADD COLUMN source_crc32c BIGINT NOT NULL DEFAULT -1;
UPDATE copies SET source_crc32c = crc32c;
