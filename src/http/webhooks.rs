//! `/v1/webhooks`: subscriptions to job status changes, and the task that delivers them.
//!
//! Each status change a job logs queues one delivery per matching subscription in the same
//! transaction (the outbox), so a delivery is never lost to a crash or restart and never delays
//! training. A background task POSTs due deliveries, signed with HMAC-SHA256 over
//! `"<timestamp>.<body>"`, and retries failures (no answer or not `2xx`) with exponential backoff.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::pagination::ListQuery;
use super::{ApiError, AppJson, AppQuery, AppState, Problem};
use crate::nn::FieldError;
use crate::store::{self, webhooks::DeliveryRow, webhooks::WebhookRow};

/// The events a subscription may name.
pub const EVENTS: [&str; 6] = [
    "job.queued",
    "job.running",
    "job.succeeded",
    "job.failed",
    "job.cancelled",
    "job.*",
];
/// Tries before a delivery is given up (`failed`).
pub const MAX_ATTEMPTS: i64 = 10;
/// The wait after the first failure; it doubles with each further one, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// How long one delivery may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the sender looks for due deliveries.
const POLL: Duration = Duration::from_millis(200);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(delete_webhook))
        .routes(routes!(list_deliveries))
}

/// Body of `POST /v1/webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// An `http` or `https` URL (up to 2,048 characters) that receives a `POST` per event.
    pub url: String,
    /// Some of `job.queued`, `job.running`, `job.succeeded`, `job.failed`, `job.cancelled`, or
    /// `job.*` for every status change.
    pub events: Vec<String>,
    /// 16 to 256 characters: the HMAC-SHA256 key of the `Fitd-Signature` header. Never shown again.
    pub secret: String,
}

/// A subscription (its secret is never shown).
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub items: Vec<WebhookView>,
}

/// One delivery and what became of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: String,
    /// e.g. `job.succeeded`.
    pub event: String,
    /// `pending` (to be tried, again or for the first time), `delivered` or `failed` (given up after
    /// 10 tries).
    pub status: String,
    pub attempts: i64,
    /// HTTP status of the last answer, `null` before one came.
    pub last_status: Option<i64>,
    /// Why the last try got no answer.
    pub last_error: Option<String>,
    /// The JSON body sent.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub created_at: String,
    pub delivered_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub items: Vec<DeliveryView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// How many of the latest deliveries, 1..=500 (default 50).
    pub limit: Option<i64>,
}

fn view(r: WebhookRow) -> Result<WebhookView, ApiError> {
    Ok(WebhookView {
        events: serde_json::from_str(&r.events).map_err(anyhow::Error::from)?,
        id: r.id,
        url: r.url,
        created_at: r.created_at,
    })
}

fn delivery_view(r: DeliveryRow) -> DeliveryView {
    DeliveryView {
        payload: serde_json::from_str(&r.payload).unwrap_or(serde_json::Value::Null),
        id: r.id,
        event: r.event,
        status: r.status,
        attempts: r.attempts,
        last_status: r.last_status,
        last_error: r.last_error,
        created_at: r.created_at,
        delivered_at: r.delivered_at,
    }
}

fn check(body: &CreateWebhook) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if body.url.len() > 2048 {
        errors.push(FieldError::new("url", "must be at most 2048 characters long"));
    } else {
        match reqwest::Url::parse(&body.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => errors.push(FieldError::new("url", "must be an absolute http or https URL")),
        }
    }
    if body.events.is_empty() || body.events.len() > EVENTS.len() {
        errors.push(FieldError::new(
            "events",
            format!("must list 1 to {} events", EVENTS.len()),
        ));
    } else {
        for (i, e) in body.events.iter().enumerate() {
            if !EVENTS.contains(&e.as_str()) {
                errors.push(FieldError::new(
                    format!("events[{i}]"),
                    format!("must be one of {}", EVENTS.join(", ")),
                ));
            }
        }
    }
    let n = body.secret.chars().count();
    if !(16..=256).contains(&n) {
        errors.push(FieldError::new("secret", "must be 16 to 256 characters long"));
    }
    errors
}

/// Subscribe a URL to job status changes.
#[utoipa::path(post, path = "/webhooks", operation_id = "create_webhook", tag = "webhooks",
    request_body = CreateWebhook,
    responses(
        (status = 201, description = "Subscribed; `Location` is the subscription", body = WebhookView),
        (status = 422, description = "A bad URL, event or secret; `errors` names each", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_webhook(
    State(state): State<AppState>,
    AppJson(body): AppJson<CreateWebhook>,
) -> Result<Response, ApiError> {
    let errors = check(&body);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let row = WebhookRow {
        id: store::new_id(),
        url: body.url,
        events: serde_json::to_string(&body.events).map_err(anyhow::Error::from)?,
        secret: body.secret,
        created_at: store::now_rfc3339(),
    };
    store::webhooks::insert(&state.store, &row).await?;
    let location = format!("/v1/webhooks/{}", row.id);
    let mut res = (StatusCode::CREATED, AppJson(view(row)?)).into_response();
    res.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location).map_err(anyhow::Error::from)?,
    );
    Ok(res)
}

/// Every subscription.
#[utoipa::path(get, path = "/webhooks", operation_id = "list_webhooks", tag = "webhooks",
    responses((status = 200, description = "The subscriptions", body = WebhookList)))]
pub async fn list_webhooks(State(state): State<AppState>) -> Result<AppJson<WebhookList>, ApiError> {
    let items = store::webhooks::list(&state.store)
        .await?
        .into_iter()
        .map(view)
        .collect::<Result<_, _>>()?;
    Ok(AppJson(WebhookList { items }))
}

fn hook_error(e: store::Error, id: &str) -> ApiError {
    match e {
        store::Error::NotFound(_) => ApiError::not_found("webhook", id),
        other => other.into(),
    }
}

/// Unsubscribe; pending deliveries are dropped.
#[utoipa::path(delete, path = "/webhooks/{id}", operation_id = "delete_webhook", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such webhook", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    store::webhooks::delete(&state.store, &id)
        .await
        .map_err(|e| hook_error(e, &id))?;
    Ok(StatusCode::NO_CONTENT)
}

/// A subscription's latest deliveries, newest first, each with its attempts and last answer.
#[utoipa::path(get, path = "/webhooks/{id}/deliveries", operation_id = "list_webhook_deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id"), DeliveriesQuery),
    responses(
        (status = 200, description = "The deliveries", body = DeliveryList),
        (status = 404, description = "No such webhook", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad `limit`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AppQuery(q): AppQuery<DeliveriesQuery>,
) -> Result<AppJson<DeliveryList>, ApiError> {
    let limit = ListQuery {
        limit: q.limit,
        after: None,
    }
    .limit()?;
    store::webhooks::get(&state.store, &id)
        .await
        .map_err(|e| hook_error(e, &id))?;
    let items = store::webhooks::deliveries(&state.store, &id, limit)
        .await?
        .into_iter()
        .map(delivery_view)
        .collect();
    Ok(AppJson(DeliveryList { items }))
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let (mut ipad, mut opad) = ([0x36u8; BLOCK], [0x5cu8; BLOCK]);
    for i in 0..BLOCK {
        ipad[i] ^= k[i];
        opad[i] ^= k[i];
    }
    let inner = Sha256::new().chain_update(ipad).chain_update(message).finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// The `Fitd-Signature` value of a body sent at `timestamp` (Unix seconds): `v1=` and the hex
/// HMAC-SHA256 of `"<timestamp>.<body>"` under the subscription's secret.
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let signed = format!("{timestamp}.{body}");
    format!(
        "v1={}",
        hex::encode(hmac_sha256(secret.as_bytes(), signed.as_bytes()))
    )
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// The wait before try `attempts + 1` after `attempts` failed ones.
pub fn backoff(attempts: i64) -> Duration {
    let doublings = attempts.saturating_sub(1).clamp(0, 20) as u32;
    FIRST_BACKOFF.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

/// Starts the task that sends due deliveries until the server shuts down.
pub fn spawn_sender(state: &AppState) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(SEND_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("fitd-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let store = state.store.clone();
    let stop = state.jobs.shutdown_token();
    tokio::spawn(async move {
        loop {
            match store::webhooks::due(&store, now_ms(), 16, 2 * SEND_TIMEOUT.as_millis() as i64).await {
                Ok(due) if !due.is_empty() => {
                    let sends = due.into_iter().map(|d| send(&client, &store, d));
                    futures_util::future::join_all(sends).await;
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    if store.pool.is_closed() {
                        return;
                    }
                    tracing::warn!(error = %e, "reading due webhook deliveries failed");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    });
    Ok(())
}

async fn send(client: &reqwest::Client, store: &store::Store, d: store::webhooks::Due) {
    let timestamp = now_ms() / 1000;
    let body = d.delivery.payload.clone();
    let res = client
        .post(&d.url)
        .header(header::CONTENT_TYPE, "application/json")
        .header("fitd-event", &d.delivery.event)
        .header("fitd-delivery", &d.delivery.id)
        .header("fitd-timestamp", timestamp.to_string())
        .header("fitd-signature", signature(&d.secret, timestamp, &body))
        .body(body)
        .send()
        .await;
    let attempts = d.delivery.attempts + 1;
    let retry_at = (attempts < MAX_ATTEMPTS).then(|| now_ms() + backoff(attempts).as_millis() as i64);
    let recorded = match res {
        Ok(r) if r.status().is_success() => {
            store::webhooks::record_attempt(
                store,
                &d.delivery.id,
                true,
                Some(r.status().as_u16() as i64),
                None,
                None,
            )
            .await
        }
        Ok(r) => {
            store::webhooks::record_attempt(
                store,
                &d.delivery.id,
                false,
                Some(r.status().as_u16() as i64),
                None,
                retry_at,
            )
            .await
        }
        Err(e) => {
            let error = format!("{e}");
            store::webhooks::record_attempt(store, &d.delivery.id, false, None, Some(&error), retry_at).await
        }
    };
    if let Err(e) = recorded {
        tracing::warn!(delivery = d.delivery.id, error = %e, "recording a webhook delivery failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // Test cases 1 and 6 (a key longer than the block).
        assert_eq!(
            hex::encode(hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn backoff_doubles_from_one_second_up_to_ten_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}
