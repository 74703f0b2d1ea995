//! SQL for webhooks: subscriptions and the outbox of their deliveries.

use sqlx::{Any, Row, Transaction};

use super::{Error, Store, now_rfc3339};

/// One row of `webhooks` (the secret included: the sender needs it).
#[derive(Debug, Clone)]
pub struct WebhookRow {
    pub id: String,
    pub url: String,
    /// JSON array of event names.
    pub events: String,
    pub secret: String,
    pub created_at: String,
}

fn hook_from_row(r: &sqlx::any::AnyRow) -> Result<WebhookRow, sqlx::Error> {
    Ok(WebhookRow {
        id: r.try_get("id")?,
        url: r.try_get("url")?,
        events: r.try_get("events")?,
        secret: r.try_get("secret")?,
        created_at: r.try_get("created_at")?,
    })
}

/// One delivery of the outbox.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub id: String,
    pub webhook_id: String,
    pub event: String,
    pub payload: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_ms: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub delivered_at: Option<String>,
}

fn delivery_from_row(r: &sqlx::any::AnyRow) -> Result<DeliveryRow, sqlx::Error> {
    Ok(DeliveryRow {
        id: r.try_get("id")?,
        webhook_id: r.try_get("webhook_id")?,
        event: r.try_get("event")?,
        payload: r.try_get("payload")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        next_attempt_ms: r.try_get("next_attempt_ms")?,
        last_status: r.try_get("last_status")?,
        last_error: r.try_get("last_error")?,
        created_at: r.try_get("created_at")?,
        delivered_at: r.try_get("delivered_at")?,
    })
}

const DELIVERY_COLUMNS: &str = "id, webhook_id, event, payload, status, attempts, next_attempt_ms, last_status, \
     last_error, created_at, delivered_at";

pub async fn insert(store: &Store, row: &WebhookRow) -> Result<(), Error> {
    sqlx::query("INSERT INTO webhooks (id, url, events, secret, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&row.id)
        .bind(&row.url)
        .bind(&row.events)
        .bind(&row.secret)
        .bind(&row.created_at)
        .execute(&store.pool)
        .await?;
    Ok(())
}

pub async fn get(store: &Store, id: &str) -> Result<WebhookRow, Error> {
    let row = sqlx::query("SELECT id, url, events, secret, created_at FROM webhooks WHERE id = $1")
        .bind(id)
        .fetch_optional(&store.pool)
        .await?
        .ok_or(Error::NotFound("webhook"))?;
    Ok(hook_from_row(&row)?)
}

pub async fn list(store: &Store) -> Result<Vec<WebhookRow>, Error> {
    let rows = sqlx::query("SELECT id, url, events, secret, created_at FROM webhooks ORDER BY seq")
        .fetch_all(&store.pool)
        .await?;
    Ok(rows.iter().map(hook_from_row).collect::<Result<_, _>>()?)
}

/// Deletes a subscription and its deliveries.
pub async fn delete(store: &Store, id: &str) -> Result<(), Error> {
    let done = sqlx::query("DELETE FROM webhooks WHERE id = $1")
        .bind(id)
        .execute(&store.pool)
        .await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound("webhook"));
    }
    Ok(())
}

/// Queues, inside the transaction that logs a job's `status` event, one delivery per subscription
/// to that status (`job.<status>` or `job.*`).
pub async fn enqueue_status(
    tx: &mut Transaction<'_, Any>,
    job_id: &str,
    status_data: &str,
) -> Result<(), Error> {
    let data: serde_json::Value =
        serde_json::from_str(status_data).map_err(|e| Error::Corrupt(format!("status event: {e}")))?;
    let status = data["status"].as_str().unwrap_or_default().to_string();
    let event = format!("job.{status}");
    let hooks = sqlx::query("SELECT id, events FROM webhooks ORDER BY seq")
        .fetch_all(&mut **tx)
        .await?;
    let now = now_rfc3339();
    for hook in &hooks {
        let events: Vec<String> = serde_json::from_str(&hook.try_get::<String, _>("events")?)
            .map_err(|e| Error::Corrupt(format!("webhook events: {e}")))?;
        if !events.iter().any(|e| e == "job.*" || *e == event) {
            continue;
        }
        let payload = serde_json::json!({
            "type": event,
            "job_id": job_id,
            "status": status,
            "data": data,
            "created_at": now,
        });
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, webhook_id, event, payload, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(uuid::Uuid::new_v4().simple().to_string())
        .bind(hook.try_get::<String, _>("id")?)
        .bind(&event)
        .bind(payload.to_string())
        .bind(&now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// A delivery due now with what sending it needs.
#[derive(Debug, Clone)]
pub struct Due {
    pub delivery: DeliveryRow,
    pub url: String,
    pub secret: String,
}

/// Takes up to `limit` pending deliveries whose time has come, oldest first, and postpones them by
/// `hold_ms` in the same statement, so the sender of another node (or a later round here) does not
/// send them too while this one does; a delivery whose sender died is retried once that passes.
pub async fn due(store: &Store, now_ms: i64, limit: i64, hold_ms: i64) -> Result<Vec<Due>, Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE webhook_deliveries SET next_attempt_ms = $1 + $3 WHERE id IN \
         (SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_ms <= $1 \
          ORDER BY next_attempt_ms, seq LIMIT $2{lock}) \
         RETURNING {DELIVERY_COLUMNS}",
        lock = store.backend().claim_lock()
    )))
    .bind(now_ms)
    .bind(limit)
    .bind(hold_ms)
    .fetch_all(&store.pool)
    .await?;
    let mut taken = rows
        .iter()
        .map(delivery_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    taken.sort_by(|a, b| a.created_at.cmp(&b.created_at));
    let mut out = Vec::with_capacity(taken.len());
    for delivery in taken {
        let hook = sqlx::query("SELECT url, secret FROM webhooks WHERE id = $1")
            .bind(&delivery.webhook_id)
            .fetch_optional(&store.pool)
            .await?;
        // A subscription deleted in between took its deliveries with it.
        if let Some(hook) = hook {
            out.push(Due {
                url: hook.try_get("url")?,
                secret: hook.try_get("secret")?,
                delivery,
            });
        }
    }
    Ok(out)
}

/// Records one attempt: delivered, or when to try again (`None`: give up, `failed`).
pub async fn record_attempt(
    store: &Store,
    id: &str,
    delivered: bool,
    http_status: Option<i64>,
    error: Option<&str>,
    retry_at_ms: Option<i64>,
) -> Result<(), Error> {
    let status = match (delivered, retry_at_ms) {
        (true, _) => "delivered",
        (false, Some(_)) => "pending",
        (false, None) => "failed",
    };
    sqlx::query(
        "UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1, last_status = $2, last_error = $3, \
         next_attempt_ms = COALESCE($4, next_attempt_ms), delivered_at = CASE WHEN $5 THEN $6 END WHERE id = $7",
    )
    .bind(status)
    .bind(http_status)
    .bind(error)
    .bind(retry_at_ms)
    .bind(delivered)
    .bind(now_rfc3339())
    .bind(id)
    .execute(&store.pool)
    .await?;
    Ok(())
}

/// The latest `limit` deliveries of a subscription, newest first.
pub async fn deliveries(store: &Store, webhook_id: &str, limit: i64) -> Result<Vec<DeliveryRow>, Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY seq DESC LIMIT $2"
    )))
    .bind(webhook_id)
    .bind(limit)
    .fetch_all(&store.pool)
    .await?;
    Ok(rows.iter().map(delivery_from_row).collect::<Result<_, _>>()?)
}
