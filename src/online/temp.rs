//! A temporary file of the online tier and the promise that it does not outlive a failure:
//! [`TempFile`] removes its file when dropped, unless it was published. Every way out of a
//! write that does not publish (an error, a refused data set, an abandoned association, a
//! cancelled task) thus removes the temporary at the one place that owns it.

use std::path::{Path, PathBuf};

/// The name of a temporary file in `ROOT/tmp/`, created or not yet; dropping it removes the
/// file (if there is one) unless [`TempFile::published`] was called.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    published: bool,
}

impl TempFile {
    pub(super) fn new(path: PathBuf) -> TempFile {
        TempFile {
            path,
            published: false,
        }
    }

    /// Where the temporary is (or will be) written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file was renamed to its location: there is nothing left to remove.
    pub fn published(&mut self) {
        self.published = true;
    }
}

impl Drop for TempFile {
    /// One `unlink`, run on the calling thread (also an async worker's: it happens on failure
    /// paths only, and doing it before the caller answers keeps the order observable).
    fn drop(&mut self) {
        if self.published {
            return;
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => tracing::debug!(temp = %self.path.display(), "temporary removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // Left for the sweep of temporaries (at the next start, or once this lease ends).
            Err(e) => tracing::warn!(temp = %self.path.display(), error = %e,
                "cannot remove a temporary"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_unless_published() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.part"), dir.path().join("b.part"));
        std::fs::write(&a, b"half").unwrap();
        std::fs::write(&b, b"whole").unwrap();
        drop(TempFile::new(a.clone()));
        assert!(!a.exists(), "a temporary dropped unpublished is removed");
        let mut kept = TempFile::new(b.clone());
        kept.published();
        drop(kept);
        assert!(b.exists(), "a published temporary's name is not touched");
        // Never created: nothing to do, nothing reported.
        drop(TempFile::new(dir.path().join("never.part")));
    }
}
