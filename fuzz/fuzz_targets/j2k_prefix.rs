//! The first bytes of a stored JPEG 2000 codestream, as a reduced view reads them, cut into a
//! codestream of its lowest resolutions (`codec::j2k::prefix`). The first input byte says how
//! many resolutions to keep.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::codec::j2k::prefix::resolution_prefix;

fuzz_target!(|input: &[u8]| {
    let Some((&selector, codestream)) = input.split_first() else {
        return;
    };
    let resolutions = usize::from(selector % 8);
    if let Ok(cut) = resolution_prefix(codestream, resolutions) {
        // Never more than what was read, plus the EOC marker it ends with.
        assert!(cut.len() <= codestream.len() + 2, "the cut outgrew its input");
        assert_eq!(&cut[..2], &[0xFF, 0x4F], "the cut starts with SOC");
        assert_eq!(&cut[cut.len() - 2..], &[0xFF, 0xD9], "the cut ends with EOC");
    }
});
