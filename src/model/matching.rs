//! C-FIND attribute matching (PS3.4 C.2.2.2) as data: what a key's value asks for, decided
//! from the value and its VR. Pure; the locator turns it into SQL.

/// How one key restricts matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// Empty value: everything matches; the attribute is returned.
    Universal,
    /// Exactly this value.
    Single(String),
    /// Any of these UIDs (backslash-separated list).
    UidList(Vec<String>),
    /// A pattern with `*` (any run) and `?` (one character).
    Wildcard(String),
    /// Inclusive range; a missing bound is open.
    Range {
        low: Option<String>,
        high: Option<String>,
    },
}

/// VRs on which `*` and `?` are wildcards (PS3.4 C.2.2.2.4).
const WILDCARD_VRS: &[&str] = &["AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"];
/// VRs that allow range matching.
const RANGE_VRS: &[&str] = &["DA", "TM", "DT"];

/// Why a key's value cannot be used for matching.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid matching value {value:?} for VR {vr}")]
pub struct MatchingError {
    pub vr: String,
    pub value: String,
}

impl Matcher {
    /// Decides the matching type of `value` (already decoded, padding trimmed) for `vr`.
    pub fn parse(vr: &str, value: &str) -> Result<Matcher, MatchingError> {
        let value = value.trim_matches(|c: char| c == ' ' || c == '\0');
        let bad = || MatchingError {
            vr: vr.to_string(),
            value: value.to_string(),
        };
        if value.is_empty() || (WILDCARD_VRS.contains(&vr) && value.chars().all(|c| c == '*')) {
            return Ok(Matcher::Universal);
        }
        if vr == "UI" {
            let uids: Vec<String> = value
                .split('\\')
                .map(|u| u.trim_matches(|c: char| c == ' ' || c == '\0').to_string())
                .filter(|u| !u.is_empty())
                .collect();
            if uids
                .iter()
                .any(|u| !u.chars().all(|c| c.is_ascii_digit() || c == '.'))
            {
                return Err(bad());
            }
            return Ok(match uids.len() {
                0 => Matcher::Universal,
                1 => Matcher::Single(uids.into_iter().next().unwrap()),
                _ => Matcher::UidList(uids),
            });
        }
        if RANGE_VRS.contains(&vr) {
            if let Some((low, high)) = value.split_once('-') {
                let low = low.trim();
                let high = high.trim();
                if low.is_empty() && high.is_empty() {
                    return Err(bad());
                }
                let check = |v: &str| v.is_empty() || is_temporal(vr, v);
                if !check(low) || !check(high) {
                    return Err(bad());
                }
                return Ok(Matcher::Range {
                    low: (!low.is_empty()).then(|| low.to_string()),
                    high: (!high.is_empty()).then(|| high.to_string()),
                });
            }
            if !is_temporal(vr, value) {
                return Err(bad());
            }
            return Ok(Matcher::Single(value.to_string()));
        }
        if WILDCARD_VRS.contains(&vr) && value.contains(['*', '?']) {
            return Ok(Matcher::Wildcard(value.to_string()));
        }
        Ok(Matcher::Single(value.to_string()))
    }
}

/// Digits (and for TM/DT the separators they allow), so values compare as text.
fn is_temporal(vr: &str, v: &str) -> bool {
    match vr {
        "DA" => v.len() == 8 && v.chars().all(|c| c.is_ascii_digit()),
        "TM" => {
            let (hms, frac) = v.split_once('.').unwrap_or((v, ""));
            matches!(hms.len(), 2 | 4 | 6)
                && hms.chars().all(|c| c.is_ascii_digit())
                && frac.chars().all(|c| c.is_ascii_digit())
        }
        _ => v
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '+' | '-')),
    }
}

/// Pads the end of a TM range so that unspecified units include the whole unit
/// ("12" up to 12:59:59.999999).
pub fn time_range_high(high: &str) -> String {
    let (hms, frac) = high.split_once('.').unwrap_or((high, ""));
    let mut out = hms.to_string();
    while out.len() < 6 {
        out.push_str("59");
    }
    out.push('.');
    out.push_str(frac);
    while out.len() < 13 {
        out.push('9');
    }
    out
}

/// Converts a DICOM wildcard pattern to a SQL LIKE pattern with `\` as the escape character,
/// so `%`, `_` and `\` in the value match only themselves.
pub fn like_pattern(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 4);
    for c in pattern.chars() {
        match c {
            '*' => out.push('%'),
            '?' => out.push('_'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_types_follow_value_and_vr() {
        assert_eq!(Matcher::parse("PN", "").unwrap(), Matcher::Universal);
        assert_eq!(Matcher::parse("PN", "*").unwrap(), Matcher::Universal);
        assert_eq!(
            Matcher::parse("LO", "PID1").unwrap(),
            Matcher::Single("PID1".into())
        );
        assert_eq!(
            Matcher::parse("PN", "M*").unwrap(),
            Matcher::Wildcard("M*".into())
        );
        // UI never takes wildcards; a list is a list.
        assert_eq!(
            Matcher::parse("UI", "1.2\\1.3").unwrap(),
            Matcher::UidList(vec!["1.2".into(), "1.3".into()])
        );
        assert!(Matcher::parse("UI", "1.2*").is_err());
        assert_eq!(
            Matcher::parse("DA", "20240101-").unwrap(),
            Matcher::Range {
                low: Some("20240101".into()),
                high: None
            }
        );
        assert_eq!(
            Matcher::parse("DA", "-20240131").unwrap(),
            Matcher::Range {
                low: None,
                high: Some("20240131".into())
            }
        );
        assert!(Matcher::parse("DA", "2024").is_err());
        assert!(Matcher::parse("DA", "-").is_err());
        // '*' in a DA is not a wildcard: it is a bad value.
        assert!(Matcher::parse("DA", "2024*").is_err());
    }

    #[test]
    fn like_patterns_escape_sql_wildcards() {
        assert_eq!(like_pattern("M*"), "M%");
        assert_eq!(like_pattern("A?C"), "A_C");
        assert_eq!(like_pattern("100%_x\\*"), "100\\%\\_x\\\\%");
    }

    #[test]
    fn time_range_end_covers_the_unit() {
        assert_eq!(time_range_high("12"), "125959.999999");
        assert_eq!(time_range_high("1230"), "123059.999999");
        assert_eq!(time_range_high("123015.5"), "123015.599999");
    }
}
