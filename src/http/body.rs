//! Request bodies read into memory under a byte limit: refused from `Content-Length` before a byte
//! is read, and while streaming as soon as the bytes received pass the limit, so a client cannot
//! make the server hold more than the limit, whatever it declares.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use futures_util::StreamExt;

use super::ApiError;

/// Reads `body` whole; `413` naming `setting` once it is (or declares to be) over `limit` bytes.
pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    setting: &str,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "the request body exceeds the limit of {limit} bytes ({setting})"
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|d| d > limit as u64) {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    // Sized once from the declaration (already bounded by the limit) so a large body is not copied
    // again each time a growing buffer doubles.
    let mut buf: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0) as usize);
    let mut first: Option<Bytes> = None;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("failed to read the request body: {e}")))?;
        let received = buf.len() + first.as_ref().map_or(0, Bytes::len) + chunk.len();
        if received > limit {
            return Err(too_large());
        }
        // A body that arrives in one chunk is kept as it is, without a copy.
        if buf.is_empty() && first.is_none() {
            first = Some(chunk);
            continue;
        }
        if let Some(f) = first.take() {
            buf.extend_from_slice(&f);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(match first {
        Some(f) => f,
        None => Bytes::from(buf),
    })
}
