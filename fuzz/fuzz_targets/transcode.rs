//! Stored instances as the codecs meet them: a Part-10 file compressed to JPEG 2000 (what
//! `strata transcode`, archive compression and the near-line `j2k-roi` copies feed our
//! encoder, lossless and with a MAXSHIFT region of interest), and one with encapsulated pixel
//! data (JPEG 2000, RLE, JPEG ...) decoded for a destination that only takes uncompressed
//! syntaxes, whole or frame by frame as a retrieve does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::codec::dicom::{to_j2k, Roi, Target};
use strata::retrieve::transcode::{decode_by_frame, decode_whole, parse_for_decoding};

const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

/// Panics that Strata catches (`codec::pixels::guard_decoder`, around the third-party
/// decoders) are answers, not findings: the silent hook lets them unwind to it. A panic
/// nothing catches still reaches libFuzzer's own catch, which aborts.
fn quiet_caught_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|_| {})));
}

fuzz_target!(|input: &[u8]| {
    quiet_caught_panics();
    let Some((&selector, file)) = input.split_first() else {
        return;
    };
    match selector % 3 {
        0 => {
            let _ = to_j2k(file, &Target::Lossless);
        }
        1 => {
            let roi = Target::Roi {
                roi: Roi::Auto,
                ratio: f32::from(selector) / 8.0 + 1.0,
            };
            let _ = to_j2k(file, &roi);
        }
        _ => decode(file),
    }
});

fn decode(file: &[u8]) {
    // The stored syntax, as the locator would record it: from the file meta group (read as
    // ingest reads it: dicom-object's own reader reserves whatever a length declares).
    let Some(mut rest) = file.get(128..) else {
        return;
    };
    let Ok(meta) = strata::dataset::read_file_meta(&mut rest) else {
        return;
    };
    let from = meta.transfer_syntax().trim_end_matches('\0').to_string();
    let Ok((object, by_frame)) = parse_for_decoding(file, &from) else {
        return;
    };
    if by_frame {
        let mut total = None;
        let mut sent = 0u64;
        let whole = decode_by_frame(&object, EXPLICIT_LE, &mut |piece| {
            match piece {
                strata::retrieve::transcode::Decoded::Length(n) => total = Some(n),
                strata::retrieve::transcode::Decoded::Bytes(b) => sent += b.len() as u64,
            }
            true
        });
        // What was announced is what was sent.
        if let Ok(true) = whole {
            assert_eq!(total, Some(sent), "announced length differs from the bytes sent");
        }
    } else {
        let _ = decode_whole(object, EXPLICIT_LE);
    }
}
