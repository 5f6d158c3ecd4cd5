-- Resolution levels of more than one version of an instance's bytes (issue #19, item 1): a
-- near-line `j2k-roi` copy is encoded resolution first too, so its levels are kept beside
-- those of the primary, each for the bytes whose CRC-32C is `crc32c`. A thumbnail of an
-- instance whose only surviving copy is that lossy one then reads the copy's first bytes.
ALTER TABLE resolution_levels DROP CONSTRAINT resolution_levels_pkey;
ALTER TABLE resolution_levels ADD PRIMARY KEY (sop_instance_uid, crc32c);
