//! Cross-origin access (CORS) for browser viewers served from another origin than the
//! DICOMweb API (`[web] cors_origins`). Runs before authentication: a browser's preflight
//! (`OPTIONS` with `Access-Control-Request-Method`) carries no credentials, and a 401 must
//! reach the page to be shown. Requests from other origins pass unchanged, so the browser
//! keeps their answers from the page.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE_SECS: u32 = 600;
const ALLOW_METHODS: &str = "GET, POST, OPTIONS";
/// Request headers a page may send (beyond the CORS-safelisted ones).
const ALLOW_HEADERS: &str = "Authorization, Accept, Content-Type";
/// Response headers a page may read.
const EXPOSE_HEADERS: &str = "Warning, Content-Type, Content-Length, WWW-Authenticate";

/// The origins allowed to call the API from a page.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    any: bool,
    listed: Vec<String>,
}

impl Origins {
    pub fn new(configured: &[String]) -> Origins {
        Origins {
            any: configured.iter().any(|o| o == "*"),
            listed: configured
                .iter()
                .filter(|o| *o != "*")
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    fn allows(&self, origin: &str) -> bool {
        self.any || self.listed.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    pub fn is_empty(&self) -> bool {
        !self.any && self.listed.is_empty()
    }
}

/// Answers preflights from allowed origins and marks their other answers readable.
pub async fn cors(State(origins): State<Arc<Origins>>, request: Request, next: Next) -> Response {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .filter(|o| o.to_str().is_ok_and(|o| origins.allows(o)))
        .cloned();
    let Some(origin) = origin else {
        return next.run(request).await;
    };
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(PREFLIGHT_MAX_AGE_SECS),
        );
        response
    } else {
        let mut response = next.run(request).await;
        response.headers_mut().insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly_or_any() {
        let listed = Origins::new(&["https://Viewer.example.org/".into()]);
        assert!(listed.allows("https://viewer.example.org"));
        assert!(!listed.allows("https://viewer.example.org:8443"));
        assert!(!listed.allows("http://viewer.example.org"));
        assert!(Origins::new(&["*".into()]).allows("http://anything:1"));
        assert!(Origins::new(&[]).is_empty());
    }
}
