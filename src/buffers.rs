//! Read buffers used again. A retrieve reads instance after instance of about the same size,
//! and memory fresh from the allocator costs a page fault per 4 KiB on top of the copy into
//! it (with zero-filling it first, a fifth of a WADO-RS study's CPU). A buffer comes back
//! when the last `Bytes` of it is dropped (the response sent); at most [`KEPT`] bytes of
//! idle buffers are kept.

use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use bytes::Bytes;

/// Bytes of idle buffers kept at most.
pub const KEPT: usize = 16 << 20;
/// Buffers larger than this are left to the allocator.
const LARGEST: usize = 4 << 20;
/// New buffers are a multiple of this, so that one serves the next instance of about the
/// same size.
const ROUNDING: usize = 256 << 10;

static IDLE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// `length` bytes of `file` at `offset`, read into a buffer used again; short of `length`
/// is `UnexpectedEof`. Blocking.
pub fn read_at(file: &std::fs::File, offset: u64, length: u64) -> std::io::Result<Bytes> {
    let mut buffer = take(length as usize);
    file.read_exact_at(&mut buffer, offset)?;
    Ok(Bytes::from_owner(Returned(buffer)))
}

/// A buffer of `length` bytes (of whatever it held before: it is read over whole). One used
/// again was zero-filled once, when it was new, and is only filled further when it grows.
fn take(length: usize) -> Vec<u8> {
    let mut buffer = if length <= LARGEST {
        let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
        idle.iter()
            .position(|b| b.capacity() >= length)
            .map(|at| idle.swap_remove(at))
    } else {
        None
    }
    .unwrap_or_else(|| vec![0; length.next_multiple_of(ROUNDING)]);
    // Within what was initialised before, `resize` writes nothing: only bytes past it.
    if buffer.len() > length {
        buffer.truncate(length);
    } else {
        buffer.resize(length, 0);
    }
    buffer
}

struct Returned(Vec<u8>);

impl AsRef<[u8]> for Returned {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Returned {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.0);
        if buffer.capacity() > LARGEST {
            return;
        }
        let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
        let kept: usize = idle.iter().map(Vec::capacity).sum();
        if kept + buffer.capacity() <= KEPT {
            idle.push(buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_exactly_and_buffers_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let first = read_at(&file, 1000, 200_000).unwrap();
        assert_eq!(&first[..], &data[1000..201_000]);
        let address = first.as_ptr();
        drop(first);
        // The same buffer serves the next read of about the same size.
        let second = read_at(&file, 5, 210_000).unwrap();
        assert_eq!(&second[..], &data[5..210_005]);
        assert_eq!(second.as_ptr(), address);
        let err = read_at(&file, 299_000, 2000).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
