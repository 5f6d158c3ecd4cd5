-- Where each frame of a multi-frame instance is in its stored bytes (issue #19, item 2: the
-- tiles of a whole-slide level, thousands of frames in one instance): the offset of the
-- frame's fragment value from the instance's first byte, and its length, so WADO-RS /frames
-- reads only the frames asked for. Valid only for the bytes whose CRC-32C is `crc32c`; a
-- copy with other bytes is read whole.
CREATE TABLE frame_offsets (
    sop_instance_uid TEXT NOT NULL,
    frame            BIGINT NOT NULL,
    crc32c           BIGINT NOT NULL,
    byte_offset      BIGINT NOT NULL,
    byte_length      BIGINT NOT NULL,
    PRIMARY KEY (sop_instance_uid, frame)
);
