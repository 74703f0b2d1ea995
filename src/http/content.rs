//! The one rule for what a request body's `Content-Type` may be: JSON is `application/json` or an
//! `application/<anything>+json` type (RFC 6839), uploads are `multipart/form-data`; everything else,
//! a missing header included, is `415`. Every handler that reads a body asks here.

use axum::http::{HeaderMap, header};

use super::ApiError;

/// What a request declares its body to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    Json,
    Multipart,
    /// Anything else, including no or an unreadable `Content-Type`.
    Other,
}

/// The media type of the request's `Content-Type`, lower-cased, without parameters
/// (`; charset=utf-8`); `None` when there is no readable header.
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

/// Whether a media type (as [`media_type`] gives it) is JSON: `application/json` or
/// `application/<name>+json`.
pub fn is_json(media: &str) -> bool {
    let Some((kind, subtype)) = media.split_once('/') else {
        return false;
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    if kind != "application" || !token(subtype) {
        return false;
    }
    subtype == "json" || (subtype.len() > "+json".len() && subtype.ends_with("+json"))
}

/// Classifies the request's `Content-Type`.
pub fn body_type(headers: &HeaderMap) -> BodyType {
    match media_type(headers) {
        Some(m) if is_json(&m) => BodyType::Json,
        Some(m) if m == "multipart/form-data" => BodyType::Multipart,
        Some(_) | None => BodyType::Other,
    }
}

/// `Ok` for a JSON body, else the `415` problem every JSON endpoint answers.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    match body_type(headers) {
        BodyType::Json => Ok(()),
        BodyType::Multipart | BodyType::Other => Err(unsupported(headers, JSON_TYPES)),
    }
}

/// The JSON types, as a `415` names them.
pub const JSON_TYPES: &str = "application/json (or an application/*+json type)";

/// The `415` for a body that is not one of `accepted` (a human list such as
/// `application/json or multipart/form-data`), quoting a bounded part of what was sent.
pub fn unsupported(headers: &HeaderMap, accepted: &str) -> ApiError {
    let sent = match headers.get(header::CONTENT_TYPE) {
        None => "no Content-Type".to_string(),
        Some(v) => match v.to_str() {
            Ok(s) => format!("Content-Type {:?}", truncate(s, 100)),
            Err(_) => "an unreadable Content-Type".to_string(),
        },
    };
    ApiError::UnsupportedMediaType(format!(
        "expected a request body with Content-Type {accepted}; got {sent}"
    ))
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn kind(ct: Option<&str>) -> BodyType {
        let mut h = HeaderMap::new();
        if let Some(ct) = ct {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        }
        body_type(&h)
    }

    #[test]
    fn json_is_application_json_or_a_plus_json_type_and_nothing_else() {
        for ct in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/json;charset=utf-8",
            "application/vnd.api+json",
            "application/problem+json",
            "application/cloudevents+json; charset=utf-8",
        ] {
            assert_eq!(kind(Some(ct)), BodyType::Json, "{ct}");
        }
        for ct in [
            "application/jsonp",
            "application/json5",
            "application/x-json",
            "application/+json",
            "text/json",
            "text/plain",
            "application/json-seq",
            "json",
            "",
            "application/",
            "application/js on",
            "*/*",
        ] {
            assert_eq!(kind(Some(ct)), BodyType::Other, "{ct}");
        }
        assert_eq!(kind(None), BodyType::Other);
    }

    #[test]
    fn uploads_are_multipart_form_data() {
        assert_eq!(
            kind(Some("multipart/form-data; boundary=abc")),
            BodyType::Multipart
        );
        assert_eq!(kind(Some("multipart/mixed; boundary=abc")), BodyType::Other);
    }

    #[test]
    fn the_415_quotes_a_bounded_part_of_what_was_sent() {
        let mut h = HeaderMap::new();
        let long = format!("text/{}", "x".repeat(10_000));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(&long).unwrap());
        let detail = unsupported(&h, JSON_TYPES).to_string();
        assert!(detail.len() < 300, "{detail}");
        assert!(detail.contains("text/xxx"), "{detail}");
        assert!(
            require_json(&HeaderMap::new())
                .unwrap_err()
                .to_string()
                .contains("no Content-Type")
        );
    }
}
