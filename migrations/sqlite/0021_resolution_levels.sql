-- JPEG 2000 resolution levels (issue #19, item 1): for an instance the converter encoded
-- resolution first (RPCL with TLM and PLT), where each frame's codestream starts in the
-- instance's bytes and where each of its resolutions ends (`frames`: JSON array of
-- {"frame", "codestream_offset", "resolution_ends"}), so a reduced view reads only the first
-- bytes. Valid only for the bytes whose CRC-32C is `crc32c`: a copy with other bytes (the
-- instance stored again, restored from elsewhere) has no levels and is read whole.
CREATE TABLE resolution_levels (
    sop_instance_uid TEXT PRIMARY KEY,
    crc32c           BIGINT NOT NULL,
    frames           TEXT NOT NULL
);
