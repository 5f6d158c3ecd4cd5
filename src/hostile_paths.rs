//! Every file, folder and member name Strata builds from data a peer sent stays one safe
//! component where it belongs, whatever the data: online locations, S-DICOM container names
//! and offline volume members, fed the values an attacker or a broken anonymiser would send.
//! (Ingest refuses such UIDs since PS3.5 9.1 checks were added; a locator filled before that,
//! or a value that reaches a builder another way, must still be harmless.)

use std::collections::HashSet;
use std::path::{Component, Path};

use crate::archive::container_name;
use crate::backup::volume::{member_path, tar};
use crate::locator::leases::LeaseToken;
use crate::online::OnlineStore;

fn hostile() -> Vec<String> {
    let mut values: Vec<String> = [
        "../../../../tmp/evil-study",
        "..",
        ".",
        "",
        "/etc/passwd",
        "a/b",
        "C:\\Windows\\system32",
        "1.2.3/../../..",
        "1.2.3\n4",
        "1.2.3\0.4",
        "Müller^Jürgen",
        "💥",
        " 1.2.3 ",
        "1..2",
        "-rf",
        "~root",
        "$(reboot)",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    values.push("1.".repeat(4000));
    values.push("9".repeat(65));
    values
}

/// Only `[0-9a-f.]`, never `.`/`..`/empty, at most `max` bytes.
fn plain(component: &str, max: usize) -> bool {
    !component.is_empty()
        && component != "."
        && component != ".."
        && component.len() <= max
        && component
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'.')
}

fn stays_below(root: &Path, relative: &str) -> bool {
    Path::new(relative)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
        && root.join(relative).starts_with(root)
}

#[test]
fn online_locations_are_digests_below_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let store = OnlineStore::open(dir.path(), LeaseToken::fixed(1), &HashSet::new()).unwrap();
    for value in hostile() {
        let location = store.new_location(&value, &value);
        let parts: Vec<&str> = location.split('/').collect();
        assert_eq!(parts.len(), 3, "{location}");
        let file = parts[2].strip_suffix(".dcm").expect("a .dcm name");
        assert!(
            [parts[0], parts[1], file].iter().all(|p| plain(p, 80)),
            "{value:?} -> {location}"
        );
        assert!(stays_below(dir.path(), &location), "{location}");
    }
}

#[test]
fn container_names_are_digests_below_the_archive() {
    for value in hostile() {
        let name = container_name(&value);
        let parts: Vec<&str> = name.split('/').collect();
        assert_eq!(parts.len(), 2, "{name}");
        let file = parts[1].strip_suffix(".sdcm").expect("an .sdcm name");
        assert!(plain(parts[0], 2) && plain(file, 64), "{value:?} -> {name}");
        assert!(stays_below(Path::new("/archive"), &name), "{name}");
    }
}

#[test]
fn volume_members_stay_in_the_extraction_folder_and_fit_ustar() {
    assert_eq!(
        member_path("1.2", "1.2.3", "1.2.3.4"),
        "1.2/1.2.3/1.2.3.4.dcm",
        "valid UIDs are kept as they are"
    );
    for value in hostile() {
        for name in [
            member_path(&value, &value, &value),
            member_path("1.2", &value, "1.2.3"),
            member_path(&value, "1.2", "1.2.3"),
        ] {
            let parts: Vec<&str> = name.split('/').collect();
            assert_eq!(parts.len(), 3, "{value:?} -> {name}");
            let file = parts[2].strip_suffix(".dcm").expect("a .dcm name");
            for part in [parts[0], parts[1], file] {
                let digest = part.strip_prefix('x').is_some_and(|h| plain(h, 32));
                assert!(digest || plain(part, 64), "{value:?} -> {name}");
            }
            assert!(stays_below(Path::new("/restore"), &name), "{name}");
            tar::header(&name, 1, 0).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
