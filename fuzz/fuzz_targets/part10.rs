//! Part-10 heads as ingest indexes them: preamble, file meta group, the scan, the object
//! builder up to (0028,0101), the pixel data check and the indexed attributes.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use strata::ingest::attributes::read_attributes_with_head;

fuzz_target!(|input: &[u8]| {
    let Some((&selector, data)) = input.split_first() else {
        return;
    };
    // The whole file is in `data`: the path is never opened.
    let pixels = (selector & 1 == 1).then_some(u64::from(selector) * 977);
    let _ = read_attributes_with_head(
        Path::new("/nonexistent/strata-fuzz"),
        data,
        data.len() as u64,
        pixels,
    );
});
