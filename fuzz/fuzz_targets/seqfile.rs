//! S-DICOM containers (Hadoop SequenceFiles) as found on the archive tier: the header, then
//! every record head in turn, as recovery and verification walk them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::archive::seqfile::{decode_header, next_record};

fuzz_target!(|data: &[u8]| {
    let Ok(header) = decode_header(data) else {
        return;
    };
    let len = data.len() as u64;
    let mut at = header.length;
    while at <= len {
        match next_record(data, 0, at, len, &header.sync) {
            Ok(Some(record)) => {
                assert!(record.next > at, "a record must move forward");
                assert!(record.value.offset >= at);
                at = record.next;
            }
            Ok(None) | Err(_) => return,
        }
    }
});
