//! DICOM Unique Identifiers (PS3.5 9.1) as Strata takes them from peers: digits and dots
//! only, components separated by single dots, at most 64 characters. Leading zeros in a
//! component are not allowed by the standard, but old modalities send them; they are
//! accepted and flagged so that the caller can warn.

/// The longest UID PS3.5 allows.
pub const MAX_UID_LEN: usize = 64;

/// Why a value is not a UID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UidError {
    #[error("is empty")]
    Empty,
    #[error("is {0} characters long (at most 64)")]
    TooLong(usize),
    #[error("holds {0:?} (only digits and dots)")]
    BadCharacter(char),
    #[error("has an empty component")]
    EmptyComponent,
}

/// A value that passed [`check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidUid {
    /// A component other than `0` starts with `0` (tolerated, not standard).
    pub leading_zero: bool,
}

/// Checks `value` (trailing NUL and space padding already removed) against PS3.5 9.1.
pub fn check(value: &str) -> Result<ValidUid, UidError> {
    if value.is_empty() {
        return Err(UidError::Empty);
    }
    if let Some(bad) = value.chars().find(|c| !c.is_ascii_digit() && *c != '.') {
        return Err(UidError::BadCharacter(bad));
    }
    if value.len() > MAX_UID_LEN {
        return Err(UidError::TooLong(value.len()));
    }
    let mut leading_zero = false;
    for component in value.split('.') {
        if component.is_empty() {
            return Err(UidError::EmptyComponent);
        }
        leading_zero |= component.len() > 1 && component.starts_with('0');
    }
    Ok(ValidUid { leading_zero })
}

/// Whether `value` can be used as one component of a path or member name as it is: a valid
/// UID (digits and dots, never `.` or `..` alone).
pub fn is_path_safe(value: &str) -> bool {
    check(value).is_ok()
}

/// A 128-bit hex digest of `value` (a UID, or anything a peer sent): opaque, fixed-length,
/// and safe as a file, folder or member name whatever the value. Online files, S-DICOM
/// containers and offline volume members for values that are not UIDs are named by it.
pub fn digest_key(value: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(value.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_digits_and_single_dots_up_to_64() {
        assert_eq!(
            check("1.2.840.10008.5.1.4.1.1.2"),
            Ok(ValidUid {
                leading_zero: false
            })
        );
        assert!(
            check("1.2.840.0.5").is_ok(),
            "a lone 0 is a valid component"
        );
        assert_eq!(check("1.02.3").map(|v| v.leading_zero), Ok(true));
        assert_eq!(check(""), Err(UidError::Empty));
        assert_eq!(
            check("../../../../tmp/evil-study"),
            Err(UidError::BadCharacter('/'))
        );
        assert_eq!(check("1..2"), Err(UidError::EmptyComponent));
        assert_eq!(check(".1.2"), Err(UidError::EmptyComponent));
        assert_eq!(check("1.2."), Err(UidError::EmptyComponent));
        assert_eq!(check("1.2 3"), Err(UidError::BadCharacter(' ')));
        let long = format!("1.{}", "2".repeat(63));
        assert_eq!(check(&long), Err(UidError::TooLong(65)));
        assert!(check(&long[..64]).is_ok());
        assert!(!is_path_safe(".."));
        assert!(!is_path_safe("."));
        assert!(is_path_safe("1.2.3"));
    }
}
