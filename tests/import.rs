//! `strata import`: folders of Part-10 files through the C-STORE path.

mod common;

use std::process::Command;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn import_ingests_folders_and_skips_what_is_not_dicom() {
    let corpus = Corpus::generate(&[
        "--ct-studies",
        "2",
        "--ct-images",
        "3",
        "--mr-studies",
        "1",
        "--mr-images",
        "2",
    ]);
    // Not DICOM at all, and DICOM whose data set is cut short after the file meta.
    std::fs::write(corpus.dir.path().join("notes.txt"), "not an image").unwrap();
    let good = std::fs::read(corpus.path(&corpus.files[0])).unwrap();
    let group_len = u32::from_le_bytes(good[140..144].try_into().unwrap()) as usize;
    let mut cut = good[..144 + group_len + 40].to_vec();
    // A UID of its own (same length), or it would be a duplicate that is simply kept.
    let uid = corpus.files[0].sop_instance_uid.as_bytes();
    let at = cut.windows(uid.len()).position(|w| w == uid).unwrap();
    let last = at + uid.len() - 1;
    cut[last] = if cut[last] == b'1' { b'2' } else { b'1' };
    cut.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, b'P', b'N', 0xFF, 0x7F]);
    std::fs::write(corpus.dir.path().join("cut.dcm"), cut).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["import", "--json", "--config"])
        .arg(&config)
        .arg(corpus.dir.path())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "failures must make the exit status non-zero"
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // 8 images, the manifest, notes.txt and cut.dcm.
    assert_eq!(summary["files"], 11, "{summary}");
    assert_eq!(summary["stored"], 8, "{summary}");
    assert_eq!(summary["failed"], 3, "{summary}");
    let failures = summary["failures"].to_string();
    assert!(
        failures.contains("notes.txt")
            && failures.contains("cut.dcm")
            && failures.contains("manifest.json"),
        "{failures}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("skipped"));

    let locator = locator(dir.path()).await;
    for f in &corpus.files {
        let object = locator
            .find_instance(&f.sop_instance_uid)
            .await
            .unwrap()
            .expect("imported");
        assert_eq!(
            data_set_bytes(&dir.path().join("online").join(&object.location)),
            data_set_bytes(&corpus.path(f))
        );
    }
    assert_eq!(
        locator.totals().await.unwrap().instances,
        8,
        "nothing half-indexed"
    );
    assert!(std::fs::read_dir(dir.path().join("online/tmp"))
        .unwrap()
        .next()
        .is_none());

    // The imported studies answer C-FIND like stored ones.
    let server = TestServer::start_in(dir.path(), "", "");
    let out = server.findscu("VIEWER", &["QueryRetrieveLevel=STUDY", "StudyInstanceUID="]);
    assert_eq!(out.matches("(Pending)").count(), 3, "{out}");
}

/// An import is a receipt: with `[backup] enqueue_on_receive` each imported study is queued
/// for a near-line copy, as a C-STORE of it would be; without it nothing is queued.
#[tokio::test(flavor = "multi_thread")]
async fn import_queues_studies_for_backup_when_configured_to_on_receipt() {
    let corpus = Corpus::small(2, 2, 1, 1, 11);
    let mut expected = corpus.study_uids();
    expected.sort();
    for (enqueue, want) in [(true, expected.clone()), (false, Vec::new())] {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(
            dir.path(),
            &format!("[backup]\nnearline_dir = \"nearline\"\nenqueue_on_receive = {enqueue}\n"),
        );
        let out = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["import", "--config"])
            .arg(&config)
            .args(corpus.paths())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let locator = locator(dir.path()).await;
        let mut queued: Vec<String> = locator
            .backup_queue()
            .await
            .unwrap()
            .into_iter()
            .map(|q| q.study_instance_uid)
            .collect();
        queued.sort();
        assert_eq!(queued, want, "enqueue_on_receive = {enqueue}");
    }
}
