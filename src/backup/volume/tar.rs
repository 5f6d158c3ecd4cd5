//! POSIX ustar, the archive format of offline volumes: readable by `tar` on any system,
//! without Strata. Only what volumes need: regular files, long paths through the `prefix`
//! field, sizes up to 8 GiB (11 octal digits). Headers are built and parsed here without I/O.

/// Size of a header and the unit data is padded to.
pub const BLOCK: u64 = 512;

/// Why a header could not be built or parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TarError {
    #[error("member path {0:?} does not fit a ustar header (name 100, prefix 155 bytes)")]
    PathTooLong(String),
    #[error("member {0:?} is larger than ustar's 8 GiB")]
    TooLarge(String),
    #[error("not a ustar header at byte {0}")]
    NotUstar(u64),
    #[error("header checksum mismatch at byte {0}")]
    Checksum(u64),
}

/// Bytes `len` takes in the archive, padded to whole blocks.
pub fn padded(len: u64) -> u64 {
    len.div_ceil(BLOCK) * BLOCK
}

/// Bytes one member of `len` bytes takes: header and padded data.
pub fn member_size(len: u64) -> u64 {
    BLOCK + padded(len)
}

/// The end-of-archive marker: two zero blocks.
pub const END: [u8; 1024] = [0; 1024];

fn octal(field: &mut [u8], value: u64) {
    // Zero-padded octal digits, then NUL.
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
}

/// The header of a regular file `path` of `len` bytes, modified at `mtime` (Unix seconds).
pub fn header(path: &str, len: u64, mtime: u64) -> Result<[u8; 512], TarError> {
    if len >= 1 << 33 {
        return Err(TarError::TooLarge(path.to_string()));
    }
    let (prefix, name) = split_path(path)?;
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], len);
    octal(&mut h[136..148], mtime.min((1 << 33) - 1));
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..270].copy_from_slice(b"root\0");
    h[297..302].copy_from_slice(b"root\0");
    h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    // The checksum is computed with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    Ok(h)
}

/// Splits a path into ustar's prefix (up to 155 bytes) and name (up to 100) at a `/`.
fn split_path(path: &str) -> Result<(&str, &str), TarError> {
    if path.len() <= 100 {
        return Ok(("", path));
    }
    let too_long = || TarError::PathTooLong(path.to_string());
    // The last `/` that leaves a name of at most 100 bytes and a prefix of at most 155.
    path.char_indices()
        .filter(|&(i, c)| c == '/' && i <= 155 && path.len() - i - 1 <= 100 && i > 0)
        .map(|(i, _)| (&path[..i], &path[i + 1..]))
        .next_back()
        .ok_or_else(too_long)
}

/// A parsed member header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub len: u64,
    /// `b'0'` (or NUL) for regular files.
    pub kind: u8,
}

/// Parses the header block at byte `at` of an archive; `None` for an end-of-archive (zero)
/// block.
pub fn parse(h: &[u8; 512], at: u64) -> Result<Option<Entry>, TarError> {
    if h.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    if &h[257..262] != b"ustar" {
        return Err(TarError::NotUstar(at));
    }
    let field = |r: std::ops::Range<usize>| {
        let f = &h[r];
        let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
        String::from_utf8_lossy(&f[..end]).to_string()
    };
    let number = |r: std::ops::Range<usize>| {
        let s = field(r);
        u64::from_str_radix(s.trim_matches([' ', '\0']), 8).map_err(|_| TarError::NotUstar(at))
    };
    let stored = number(148..156)?;
    let mut copy = *h;
    copy[148..156].copy_from_slice(b"        ");
    let sum: u64 = copy.iter().map(|&b| u64::from(b)).sum();
    if sum != stored {
        return Err(TarError::Checksum(at));
    }
    let name = field(0..100);
    let prefix = field(345..500);
    let path = if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    };
    Ok(Some(Entry {
        path,
        len: number(124..136)?,
        kind: h[156],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_with_long_paths() {
        let uid = "1.2.826.0.1.3680043.8.498.12345678901234567890123456789012345678";
        let path = format!("{uid}/{uid}/{uid}.dcm");
        let h = header(&path, 123_456, 1_700_000_000).unwrap();
        let e = parse(&h, 0).unwrap().unwrap();
        assert_eq!(e.path, path);
        assert_eq!(e.len, 123_456);
        assert_eq!(e.kind, b'0');
        let mut bad = h;
        bad[0] ^= 1;
        assert_eq!(parse(&bad, 512), Err(TarError::Checksum(512)));
        assert_eq!(parse(&[0; 512], 0), Ok(None));
        assert!(header(&"x".repeat(300), 1, 0).is_err());
        assert!(header("short.json", 1 << 33, 0).is_err());
        assert_eq!(member_size(0), 512);
        assert_eq!(member_size(1), 1024);
        assert_eq!(member_size(512), 1024);
    }
}
