//! Data set bytes as a C-STORE delivers them: the nesting/size scan in every transfer syntax
//! Strata accepts, the truncation walk (its verdict must not depend on how the bytes were
//! split into fragments, and the Pixel Data it finds is where it says), and the small-data-set
//! decoder used for identifiers.
#![no_main]

use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use libfuzzer_sys::fuzz_target;
use strata::codec::native::Native;
use strata::codec::walk::ElementWalk;

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

    // The element walk, in the three syntaxes it follows (deflated bytes are not elements).
    if let Some(syntax) = Native::of(uid) {
        let mut whole = ElementWalk::new(syntax);
        whole.push(data);
        let mut split = ElementWalk::new(syntax);
        let step = 1 + (selector >> 2) as usize;
        for piece in data.chunks(step) {
            split.push(piece);
        }
        assert_eq!(
            whole.finish(),
            split.finish(),
            "verdict depends on fragmenting"
        );
        assert_eq!(whole.native_pixel_data(), split.native_pixel_data());
        if let Some(pixel) = whole.native_pixel_data() {
            // The header it found is where it says, and reads back as written (but for the
            // two reserved bytes of an explicit header, which a sender may fill).
            let found = &data[pixel.header_at as usize..pixel.value_at as usize];
            let vr = pixel.vr.unwrap_or(*b"OW");
            if vr == *b"OB" || vr == *b"OW" {
                let written = strata::codec::native::pixel_data_header(syntax, vr, pixel.length);
                let skip_reserved = |h: &[u8]| -> Vec<u8> {
                    h.iter()
                        .enumerate()
                        .filter(|(i, _)| h.len() != 12 || !(6..8).contains(i))
                        .map(|(_, b)| *b)
                        .collect()
                };
                assert_eq!(skip_reserved(found), skip_reserved(&written));
            }
        }
    }
});
