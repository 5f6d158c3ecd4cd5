//! C-FIND / C-MOVE / C-GET identifiers and N-ACTION Action Information, as a peer sends them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&selector, data)) = input.split_first() else {
        return;
    };
    let uid = if selector & 1 == 0 {
        "1.2.840.10008.1.2"
    } else {
        "1.2.840.10008.1.2.1"
    };
    let _ = strata::identifier::decode(data, uid, selector & 2 == 0);
    let _ = strata::commitment::decode_action(data, uid);
});
