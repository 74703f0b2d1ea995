//! Browser safety: CORS only for configured origins, and no state change from another site.
//!
//! A web page on another site can make a browser send "simple" requests without a preflight
//! (multipart or `text/plain` POSTs, form submissions); CORS only hides the answer, the request
//! still runs. So every request with an unsafe method (anything but `GET`, `HEAD`, `OPTIONS`) that
//! a browser marks as coming from elsewhere is refused with `403` before it reaches a handler:
//! `Sec-Fetch-Site: cross-site` or `same-site`, or, from browsers without fetch metadata, an
//! `Origin` other than the server's own. Origins given with `--cors-origin` are allowed.
//! Requests without those headers (curl, SDKs, servers) are not browser requests and pass.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::{ApiError, AppState};

/// The CORS layer for `--cors-origin`; `None` without origins (no CORS headers at all).
pub fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(list))
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::ACCEPT,
                header::IF_NONE_MATCH,
                header::HeaderName::from_static("last-event-id"),
                header::HeaderName::from_static("inference-header-content-length"),
            ])
            .expose_headers([
                header::LOCATION,
                header::ETAG,
                header::RETRY_AFTER,
                header::HeaderName::from_static("x-request-id"),
                header::HeaderName::from_static("server-timing"),
                header::HeaderName::from_static("inference-header-content-length"),
            ]),
    )
}

/// Why a request is refused as cross-site, if it is.
pub fn refusal(method: &Method, headers: &HeaderMap, allowed: &[String]) -> Option<String> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(|o| o.trim_end_matches('/').to_ascii_lowercase());
    let allowed_origin = origin.as_ref().is_some_and(|o| allowed.contains(o));
    let site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    match site.as_deref() {
        Some("same-origin") | Some("none") => return None,
        Some(_) if allowed_origin => return None,
        Some(other) => {
            return Some(format!(
                "a {other} browser request from {} may not change anything here; allow its origin with --cors-origin",
                origin.as_deref().unwrap_or("an unknown origin")
            ));
        }
        None => {}
    }
    let origin = origin?;
    if allowed_origin {
        return None;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let own = origin
        .split_once("://")
        .is_some_and(|(_, authority)| host.is_some_and(|h| h.eq_ignore_ascii_case(authority)));
    if own {
        return None;
    }
    Some(format!(
        "a browser request from {origin} may not change anything here; allow its origin with --cors-origin"
    ))
}

/// Refuses unsafe cross-site browser requests with `403`; see the module docs.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match refusal(req.method(), req.headers(), &state.config.cors_origins) {
        None => next.run(req).await,
        Some(detail) => {
            tracing::warn!(method = %req.method(), path = req.uri().path(), "cross-site request refused");
            ApiError::Status {
                status: StatusCode::FORBIDDEN,
                detail,
            }
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_unsafe_requests_from_elsewhere_are_refused() {
        let allowed = vec!["https://app.example".to_string()];
        let post = Method::POST;
        // Not from a browser.
        assert!(refusal(&post, &headers(&[("host", "fitd:8080")]), &allowed).is_none());
        // Same origin, with or without fetch metadata.
        let own = [("host", "fitd:8080"), ("origin", "http://fitd:8080")];
        assert!(refusal(&post, &headers(&own), &allowed).is_none());
        let meta = [
            ("host", "fitd:8080"),
            ("origin", "http://fitd:8080"),
            ("sec-fetch-site", "same-origin"),
        ];
        assert!(refusal(&post, &headers(&meta), &allowed).is_none());
        // Another site.
        let evil = [
            ("host", "fitd:8080"),
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ];
        assert!(refusal(&post, &headers(&evil), &allowed).is_some());
        assert!(refusal(&Method::GET, &headers(&evil), &allowed).is_none());
        let old_browser = [("host", "fitd:8080"), ("origin", "https://evil.example")];
        assert!(refusal(&Method::DELETE, &headers(&old_browser), &allowed).is_some());
        let opaque = [("host", "fitd:8080"), ("origin", "null")];
        assert!(refusal(&post, &headers(&opaque), &allowed).is_some());
        // A same-site sibling is still another origin.
        let sibling = [
            ("host", "fitd.example"),
            ("origin", "https://x.fitd.example"),
            ("sec-fetch-site", "same-site"),
        ];
        assert!(refusal(&post, &headers(&sibling), &allowed).is_some());
        // An allowed origin.
        let app = [
            ("host", "fitd:8080"),
            ("origin", "https://app.example"),
            ("sec-fetch-site", "cross-site"),
        ];
        assert!(refusal(&post, &headers(&app), &allowed).is_none());
    }
}
