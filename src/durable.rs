//! Making file-system changes survive a crash: fsync of folders after entries are created,
//! renamed or removed in them, and folders created durably. Shared by the online tier, the
//! local archive and near-line stores, and offline volumes.

use std::io;
use std::path::Path;

/// fsync a folder so that entries created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// `create_dir_all`, durably: every folder it creates is fsynced into its parent, so files
/// later made durable inside it cannot vanish with a folder entry lost in a crash. Costs one
/// `stat` when the folder exists. Blocking.
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durable(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        // Another writer made it meanwhile; it syncs its own creation, but may not have yet.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(e),
    }
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_folders_are_created_with_their_parents() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_dir_durable(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_durable(&deep).unwrap();
        let file = dir.path().join("a/file");
        std::fs::write(&file, b"x").unwrap();
        assert!(
            create_dir_durable(&file.join("d")).is_err(),
            "a file is not a folder"
        );
    }
}
