//! The Accept header (RFC 9110 12.5.1) as the handlers read it: media ranges with their
//! parameters, best quality first, ranges with `q=0` left out.

/// One media range of an Accept header: type, parameters and quality.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRange {
    /// Lower case, e.g. `multipart/related`.
    pub media_type: String,
    /// Other parameters than `q`, names in lower case, values unquoted (`type` in lower
    /// case too).
    pub params: Vec<(String, String)>,
    pub q: f32,
}

impl MediaRange {
    /// The value of parameter `name` (lower case), if given.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The acceptable ranges of `accept`, best first; equal qualities keep the client's order.
pub fn media_ranges(accept: &str) -> Vec<MediaRange> {
    let mut ranges: Vec<MediaRange> = accept
        .split(',')
        .filter_map(|range| {
            let mut parts = range.split(';');
            let media_type = parts.next()?.trim().to_ascii_lowercase();
            let mut params = Vec::new();
            let mut q = 1.0;
            for param in parts {
                let Some((key, value)) = param.split_once('=') else {
                    continue;
                };
                let key = key.trim().to_ascii_lowercase();
                let mut value = value.trim().trim_matches('"').to_string();
                if key == "type" {
                    // Media types are case-insensitive (RFC 9110 8.3.1).
                    value.make_ascii_lowercase();
                }
                if key == "q" {
                    q = value.parse().unwrap_or(0.0);
                } else {
                    params.push((key, value));
                }
            }
            (!media_type.is_empty()).then_some(MediaRange {
                media_type,
                params,
                q,
            })
        })
        .filter(|r| r.q > 0.0)
        .collect();
    ranges.sort_by(|a, b| b.q.total_cmp(&a.q));
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_come_best_first_with_their_parameters() {
        let ranges = media_ranges(
            "image/png;q=0.5, multipart/related; type=\"Application/DICOM\"; \
             transfer-syntax=*, image/gif;q=0",
        );
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[0].media_type, "multipart/related");
        assert_eq!(ranges[0].param("type"), Some("application/dicom"));
        assert_eq!(ranges[0].param("transfer-syntax"), Some("*"));
        assert_eq!(ranges[1].media_type, "image/png");
        assert_eq!(ranges[1].q, 0.5);
    }
}
