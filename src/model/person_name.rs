//! Person Name (PN) matching by component (PS3.5 6.2, PS3.4 C.2.2.2).
//!
//! A PN value has up to three component groups (alphabetic, ideographic, phonetic) separated by
//! `=`, each with up to five components (family, given, middle, prefix, suffix) separated by
//! `^`. The locator keeps a *search key* beside each stored name: every group padded to exactly
//! five components and the value padded to exactly three groups, so that
//! `"Yamada^Tarou=山田^太郎"` becomes `"Yamada^Tarou^^^=山田^太郎^^^=^^^^"`.
//!
//! A query key is turned into SQL LIKE patterns over that search key, component by component:
//! an empty (or `*`) component in the query matches anything, a given one must match its
//! component, wildcards stay inside their component. Because both the search key and every
//! pattern contain exactly the same number of `^` and `=` delimiters, a `%` can never swallow a
//! delimiter in a successful match, so components cannot slide into their neighbours.
//!
//! So `SMITH` finds `SMITH^JOHN`, `SMITH^JOHN` finds `SMITH^JOHN^^^` and `SMITH^JOHN=スミス`,
//! and `^JOHN` finds every JOHN. A query of one group is compared with the alphabetic group;
//! when it holds non-ASCII characters (a Chinese, Japanese or Korean name typed into the first
//! group) it is compared with every group, since sites differ in which group they fill.

use super::matching::like_pattern;

const GROUPS: usize = 3;
const COMPONENTS: usize = 5;

/// The search key stored beside a PN value.
pub fn search_key(value: &str) -> String {
    let value = value.trim_matches(|c: char| c == ' ' || c == '\0');
    let mut groups: Vec<&str> = value.splitn(GROUPS, '=').collect();
    groups.resize(GROUPS, "");
    groups
        .iter()
        .map(|group| pad_components(group, |c| c.replace('=', " ")))
        .collect::<Vec<_>>()
        .join("=")
}

/// Splits a group into exactly five components; extra components (malformed values) are kept
/// in the last one so no text is lost.
fn pad_components(group: &str, each: impl Fn(&str) -> String) -> String {
    let mut parts: Vec<&str> = group.split('^').map(str::trim).collect();
    while parts.len() > 1 && parts.last().is_some_and(|p| p.is_empty()) {
        parts.pop();
    }
    let mut out: Vec<String> = parts.iter().take(COMPONENTS - 1).map(|p| each(p)).collect();
    if parts.len() >= COMPONENTS {
        out.push(each(&parts[COMPONENTS - 1..].join(" ")));
    }
    out.resize(COMPONENTS, each(""));
    out.join("^")
}

/// LIKE patterns (escape character `\`) over the search key, any of which matching means the
/// name matches. Empty when the key matches everything.
pub fn key_patterns(key: &str) -> Vec<String> {
    let key = key.trim_matches(|c: char| c == ' ' || c == '\0');
    let groups: Vec<&str> = key.splitn(GROUPS, '=').collect();
    let group_pattern = |group: &str| -> Option<String> {
        let group = group.trim();
        if group.chars().all(|c| c == '*' || c == '^' || c == ' ') {
            return None;
        }
        Some(pad_components(group, |c| {
            let c = c.trim();
            if c.is_empty() || c.chars().all(|x| x == '*') {
                "%".to_string()
            } else {
                like_pattern(c)
            }
        }))
    };
    let any = || "%".to_string();
    if groups.len() == 1 {
        let Some(pattern) = group_pattern(groups[0]) else {
            return Vec::new();
        };
        let mut out = vec![format!("{pattern}={}={}", any(), any())];
        if !groups[0].is_ascii() {
            out.push(format!("{}={pattern}={}", any(), any()));
            out.push(format!("{}={}={pattern}", any(), any()));
        }
        return out;
    }
    let mut parts: Vec<String> = groups
        .iter()
        .map(|g| group_pattern(g).unwrap_or_else(any))
        .collect();
    if parts.iter().all(|p| p == "%") {
        return Vec::new();
    }
    parts.resize(GROUPS, any());
    vec![parts.join("=")]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Evaluates a LIKE pattern (with `\` escapes, case-sensitive) the way SQLite does.
    fn like(pattern: &str, text: &str) -> bool {
        fn go(p: &[char], t: &[char]) -> bool {
            match p.first() {
                None => t.is_empty(),
                Some('%') => (0..=t.len()).any(|i| go(&p[1..], &t[i..])),
                Some('_') => !t.is_empty() && go(&p[1..], &t[1..]),
                Some('\\') if p.len() > 1 => t.first() == Some(&p[1]) && go(&p[2..], &t[1..]),
                Some(c) => t.first() == Some(c) && go(&p[1..], &t[1..]),
            }
        }
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        go(&p, &t)
    }

    fn matches(query: &str, stored: &str) -> bool {
        let patterns = key_patterns(query);
        patterns.is_empty() || patterns.iter().any(|p| like(p, &search_key(stored)))
    }

    #[test]
    fn search_keys_have_fixed_shape() {
        assert_eq!(search_key("SMITH^JOHN"), "SMITH^JOHN^^^=^^^^=^^^^");
        assert_eq!(
            search_key("Yamada^Tarou=山田^太郎=やまだ^たろう"),
            "Yamada^Tarou^^^=山田^太郎^^^=やまだ^たろう^^^"
        );
        assert_eq!(search_key("A^B^C^D^E^F"), "A^B^C^D^E F=^^^^=^^^^");
        assert_eq!(search_key(""), "^^^^=^^^^=^^^^");
    }

    #[test]
    fn components_match_independently() {
        assert!(matches("SMITH", "SMITH^JOHN"));
        assert!(matches("SMITH^JOHN", "SMITH^JOHN^^^"));
        assert!(matches("WHITE^^^DR^^", "WHITE^^^DR^"));
        assert!(matches("^JOHN", "SMITH^JOHN"));
        assert!(!matches("^JOHN", "JOHN^SMITH"));
        assert!(!matches("SMITH^JANE", "SMITH^JOHN"));
        assert!(!matches("SMITH", "SMITHERS^JOHN"));
        assert!(matches("SMI*", "SMITHERS^JOHN"));
        assert!(matches("SMITH^J*", "SMITH^JOHN"));
        assert!(!matches("SMITH^J*", "SMITH^^JOHN"));
        assert!(matches("S?ITH", "SMITH^JOHN"));
        // A middle-name condition cannot be satisfied by sliding into the given name.
        assert!(!matches("SMITH^^M*", "SMITH^MARY"));
        assert!(matches("SMITH^^M*", "SMITH^JOHN^MICHAEL"));
        // `%` and `_` are literal characters of a name, not wildcards.
        assert!(!matches("S_ITH", "SMITH"));
        assert!(matches("100%", "100%^X"));
        assert!(!matches("100%", "1000^X"));
    }

    #[test]
    fn component_groups() {
        let stored = "Yamada^Tarou=山田^太郎=やまだ^たろう";
        assert!(matches("Yamada^Tarou", stored));
        assert!(matches("山田^太郎", stored));
        assert!(matches("やまだ", stored));
        assert!(matches("=山田^太郎", stored));
        assert!(matches("Yamada=山田", stored));
        assert!(!matches("Yamada=田中", stored));
        assert!(!matches("=Yamada", stored));
        // A Chinese name stored in the first group is found too.
        assert!(matches("王^小明", "王^小明"));
        assert!(matches("*", stored));
        assert!(matches("", stored));
        assert!(key_patterns("*^*").is_empty());
    }
}
