//! The PDU decoder (dicom-ul) and Strata's DIMSE message assembly over what it yields: bytes
//! as a peer sends them on an association, PDU after PDU.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::net::dimse::MessageAssembler;

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    let mut assembler = MessageAssembler::default();
    // At most a few hundred PDUs: each read consumes at least its 6-byte header.
    while !buf.is_empty() {
        let before = buf.len();
        match dicom_ul::pdu::read_pdu(&mut buf, 16_384, true) {
            Ok(Some(dicom_ul::pdu::Pdu::PData { data })) => {
                for pdv in data {
                    if assembler.push(pdv).is_err() {
                        return; // the association would be aborted
                    }
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
        assert!(buf.len() < before, "read_pdu consumed nothing");
    }
});
