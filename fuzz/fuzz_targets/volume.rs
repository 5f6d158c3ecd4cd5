//! Offline backup volumes (ustar with a manifest) as read back from a tape or a disk: every
//! header block, then the whole volume scan.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use strata::backup::volume::{scan, tar};

fuzz_target!(|data: &[u8]| {
    for (i, block) in data.chunks_exact(512).enumerate() {
        let block: &[u8; 512] = block.try_into().expect("512 bytes");
        let _ = tar::parse(block, i as u64 * 512);
    }
    let mut file = tempfile::NamedTempFile::new_in(std::env::temp_dir()).expect("temp file");
    file.write_all(data).expect("write");
    if let Ok(scanned) = scan(file.path()) {
        for member in &scanned.manifest.members {
            let end = member.offset.checked_add(member.length);
            assert!(
                end.is_some_and(|end| end <= data.len() as u64),
                "member outside the volume"
            );
        }
    }
});
