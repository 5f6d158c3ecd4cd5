//! Data set bytes as a C-STORE delivers them: the nesting/size scan in every transfer syntax
//! Strata accepts, the truncation walk (its verdict must not depend on how the bytes were
//! split into fragments), and the small-data-set decoder used for identifiers.
#![no_main]

use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use libfuzzer_sys::fuzz_target;
use strata::ingest::walk::ElementWalk;

const SYNTAXES: [&str; 4] = [
    "1.2.840.10008.1.2",      // Implicit VR Little Endian
    "1.2.840.10008.1.2.1",    // Explicit VR Little Endian
    "1.2.840.10008.1.2.2",    // Explicit VR Big Endian
    "1.2.840.10008.1.2.1.99", // Deflated Explicit VR Little Endian
];

fuzz_target!(|input: &[u8]| {
    let Some((&selector, data)) = input.split_first() else {
        return;
    };
    let uid = SYNTAXES[(selector & 3) as usize];
    let ts = TransferSyntaxRegistry.get(uid).expect("a known syntax");
    let _ = strata::dataset::scan(
        std::io::Cursor::new(data.to_vec()),
        ts,
        Some(dicom_core::Tag(0x0028, 0x0101)),
        1 << 20,
    );
    let _ = strata::dataset::decode_small(data, uid, 1 << 20);

    if selector & 2 == 0 {
        let explicit = selector & 1 == 1;
        let mut whole = ElementWalk::new(explicit);
        whole.push(data);
        let mut split = ElementWalk::new(explicit);
        let step = 1 + (selector >> 2) as usize;
        for piece in data.chunks(step) {
            split.push(piece);
        }
        assert_eq!(
            whole.finish(),
            split.finish(),
            "verdict depends on fragmenting"
        );
        assert_eq!(whole.native_pixel_data_len(), split.native_pixel_data_len());
    }
});
