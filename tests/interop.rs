//! Strata's C-MOVE and Storage Commitment against Orthanc from Debian, in a private network namespace (needs root for
//! `unshare -n`; CI runs as root). The checks themselves are in tools/interop_orthanc.py.

mod common;

use std::process::Command;

use common::*;

#[test]
fn orthanc_pulls_with_c_move_and_receives_bit_identical_instances() {
    let corpus = Corpus::generate(&[
        "--ct-studies",
        "1",
        "--ct-images",
        "4",
        "--mr-studies",
        "1",
        "--mr-images",
        "3",
        "--seed",
        "9",
    ]);
    let work = tempfile::tempdir().unwrap();
    let out = Command::new("unshare")
        .arg("-n")
        .arg(python())
        .arg(repo().join("tools/interop_orthanc.py"))
        .arg("--strata")
        .arg(env!("CARGO_BIN_EXE_strata"))
        .arg("--corpus")
        .arg(corpus.dir.path())
        .arg("--work")
        .arg(work.path())
        .output()
        .unwrap();
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert_eq!(log.matches("bit-identical").count(), 2, "{log}");
    assert!(log.contains("OK storage commitment from Orthanc"), "{log}");
}
