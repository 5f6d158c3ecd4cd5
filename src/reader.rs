//! The reader: "give me the bytes of this instance", whichever tier holds them. Retrieve asks
//! here with the locator's [`StoredObject`]; each tier answers positioned range reads, so the
//! archive tier (S-DICOM containers) plugs in beside the online one without retrieve changing.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;

use crate::archive::{Archive, ArchiveStore};
use crate::model::{StoredObject, Tier};
use crate::online::OnlineStore;

/// Why an instance could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {location} at {offset}+{length}: {source}")]
    Io {
        location: String,
        offset: u64,
        length: u64,
        source: std::io::Error,
    },
    #[error("{location} is damaged: CRC-32C {found:08x}, expected {expected:08x}")]
    Checksum {
        location: String,
        found: u32,
        expected: u32,
    },
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
}

/// Reads instances from the tiers.
#[derive(Debug, Clone)]
pub struct Reader {
    online: Arc<OnlineStore>,
    archive: Arc<Archive>,
}

impl Reader {
    pub fn new(online: Arc<OnlineStore>, archive: Arc<Archive>) -> Reader {
        Reader { online, archive }
    }

    /// `length` bytes at `at` bytes into the instance's Part-10 file.
    pub async fn read_range(
        &self,
        object: &StoredObject,
        at: u64,
        length: u64,
    ) -> Result<Bytes, ReadError> {
        let offset = object.offset + at;
        match object.tier {
            Tier::Online => {
                let path = self.online.path(&object.location);
                let location = object.location.clone();
                tokio::task::spawn_blocking(move || {
                    let io = |source| ReadError::Io {
                        location: location.clone(),
                        offset,
                        length,
                        source,
                    };
                    let file = std::fs::File::open(&path).map_err(io)?;
                    let mut buf = vec![0u8; length as usize];
                    file.read_exact_at(&mut buf, offset).map_err(io)?;
                    Ok(Bytes::from(buf))
                })
                .await
                .expect("blocking read task")
            }
            // One positioned read inside the study's container.
            Tier::Archive => Ok(self
                .archive
                .read_at(&object.location, offset, length)
                .await?),
        }
    }

    /// The whole Part-10 file, checked against its stored CRC-32C.
    pub async fn read_verified(&self, object: &StoredObject) -> Result<Bytes, ReadError> {
        let bytes = self.read_range(object, 0, object.length).await?;
        let found = crc32c::crc32c(&bytes);
        if found != object.crc32c {
            return Err(ReadError::Checksum {
                location: object.location.clone(),
                found,
                expected: object.crc32c,
            });
        }
        Ok(bytes)
    }
}

/// Where the data set starts in a Part-10 file: after the 128-byte preamble, `DICM` and the
/// File Meta Information group (always Explicit VR Little Endian). `head` needs to hold the
/// meta group; a few kilobytes always do.
pub fn data_set_offset(head: &[u8]) -> Result<usize, String> {
    if head.len() < 132 || &head[128..132] != b"DICM" {
        return Err("no DICM prefix".into());
    }
    let mut pos = 132;
    loop {
        let Some(h) = head.get(pos..pos + 8) else {
            // The meta group runs to the end of what we have: the data set is empty.
            return if pos == head.len() {
                Ok(pos)
            } else {
                Err("truncated file meta".into())
            };
        };
        if u16::from_le_bytes([h[0], h[1]]) != 0x0002 {
            return Ok(pos);
        }
        let vr = &h[4..6];
        let long = matches!(
            vr,
            b"OB"
                | b"OW"
                | b"OF"
                | b"OD"
                | b"OL"
                | b"OV"
                | b"SQ"
                | b"UT"
                | b"UN"
                | b"UC"
                | b"UR"
                | b"SV"
                | b"UV"
        );
        let (len, header) = if long {
            let l = head.get(pos + 8..pos + 12).ok_or("truncated file meta")?;
            (u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize, 12)
        } else {
            (u16::from_le_bytes([h[6], h[7]]) as usize, 8)
        };
        if len == u32::MAX as usize {
            return Err("undefined length in file meta".into());
        }
        pos += header + len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_set_offset_walks_the_meta_group() {
        let mut f = vec![0u8; 128];
        f.extend_from_slice(b"DICM");
        // (0002,0000) UL 4
        f.extend_from_slice(&[2, 0, 0, 0, b'U', b'L', 4, 0, 10, 0, 0, 0]);
        // (0002,0001) OB, long form, 2 bytes
        f.extend_from_slice(&[2, 0, 1, 0, b'O', b'B', 0, 0, 2, 0, 0, 0, 0, 1]);
        let data_start = f.len();
        // (0008,0016) UI ...
        f.extend_from_slice(&[8, 0, 0x16, 0, b'U', b'I', 2, 0, b'1', 0]);
        assert_eq!(data_set_offset(&f), Ok(data_start));
        assert!(data_set_offset(&f[..100]).is_err());
        assert!(data_set_offset(&f[..140]).is_err());
    }
}
