//! SQL for webhooks: subscriptions and the outbox of their deliveries.

use sqlx::{Row, Sqlite, Transaction};

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

fn hook_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<WebhookRow, sqlx::Error> {
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

fn delivery_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<DeliveryRow, sqlx::Error> {
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
    sqlx::query("INSERT INTO webhooks (id, url, events, secret, created_at) VALUES (?, ?, ?, ?, ?)")
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
    let row = sqlx::query("SELECT id, url, events, secret, created_at FROM webhooks WHERE id = ?")
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
    let done = sqlx::query("DELETE FROM webhooks WHERE id = ?")
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
    tx: &mut Transaction<'_, Sqlite>,
    job_id: &str,
    status_data: &str,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, webhook_id, event, payload, created_at) \
         SELECT lower(hex(randomblob(16))), w.id, 'job.' || json_extract(?1, '$.status'), \
                json_object('type', 'job.' || json_extract(?1, '$.status'), 'job_id', ?2, \
                            'status', json_extract(?1, '$.status'), 'data', json(?1), 'created_at', ?3), ?3 \
         FROM webhooks w WHERE EXISTS (SELECT 1 FROM json_each(w.events) e \
                                       WHERE e.value IN ('job.*', 'job.' || json_extract(?1, '$.status'))) \
         ORDER BY w.seq",
    )
    .bind(status_data)
    .bind(job_id)
    .bind(now_rfc3339())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A delivery due now with what sending it needs.
#[derive(Debug, Clone)]
pub struct Due {
    pub delivery: DeliveryRow,
    pub url: String,
    pub secret: String,
}

/// Pending deliveries whose time has come, oldest first.
pub async fn due(store: &Store, now_ms: i64, limit: i64) -> Result<Vec<Due>, Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {cols}, w.url AS url, w.secret AS secret FROM webhook_deliveries d \
         JOIN webhooks w ON w.id = d.webhook_id \
         WHERE d.status = 'pending' AND d.next_attempt_ms <= ? ORDER BY d.next_attempt_ms, d.seq LIMIT ?",
        cols = DELIVERY_COLUMNS
            .split(", ")
            .map(|c| format!("d.{c} AS {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    )))
    .bind(now_ms)
    .bind(limit)
    .fetch_all(&store.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Due {
                delivery: delivery_from_row(r)?,
                url: r.try_get("url")?,
                secret: r.try_get("secret")?,
            })
        })
        .collect()
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
        "UPDATE webhook_deliveries SET status = ?, attempts = attempts + 1, last_status = ?, last_error = ?, \
         next_attempt_ms = COALESCE(?, next_attempt_ms), delivered_at = CASE WHEN ? THEN ? END WHERE id = ?",
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
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = ? ORDER BY seq DESC LIMIT ?"
    )))
    .bind(webhook_id)
    .bind(limit)
    .fetch_all(&store.pool)
    .await?;
    Ok(rows.iter().map(delivery_from_row).collect::<Result<_, _>>()?)
}
