//! SQL for aliases: stable names of saved models (`production`), moved atomically, with history.

use sqlx::Row;

use super::{Error, Store, now_rfc3339};

/// One row of `aliases`.
#[derive(Debug, Clone)]
pub struct AliasRow {
    pub name: String,
    pub saved_model_id: String,
    pub created_at: String,
    pub updated_at: String,
}

fn from_row(r: &sqlx::any::AnyRow) -> Result<AliasRow, sqlx::Error> {
    Ok(AliasRow {
        name: r.try_get("name")?,
        saved_model_id: r.try_get("saved_model_id")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// One entry of an alias's history: where it pointed from `created_at` on (`None`: deleted).
#[derive(Debug, Clone)]
pub struct HistoryRow {
    pub saved_model_id: Option<String>,
    pub created_at: String,
}

/// Points `name` at a saved model, creating the alias or moving it, and records the move, in one
/// transaction. Returns the alias and whether it was created. `NotFound("saved model")` when the
/// saved model does not exist.
pub async fn put(store: &Store, name: &str, saved_model_id: &str) -> Result<(AliasRow, bool), Error> {
    let now = now_rfc3339();
    let mut tx = store.pool.begin().await?;
    // The first statement writes, and reads the saved model in the same step: a delete of it cannot
    // come in between (it is refused while an alias points at it).
    let row = sqlx::query(
        "INSERT INTO aliases (name, saved_model_id, created_at, updated_at) \
         SELECT $1, id, $2, $2 FROM saved_models WHERE id = $3 \
         ON CONFLICT (name) DO UPDATE SET saved_model_id = excluded.saved_model_id, \
         updated_at = excluded.updated_at \
         RETURNING name, saved_model_id, created_at, updated_at",
    )
    .bind(name)
    .bind(&now)
    .bind(saved_model_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Err(Error::NotFound("saved model"));
    };
    let row = from_row(&row)?;
    sqlx::query("INSERT INTO alias_history (name, saved_model_id, created_at) VALUES ($1, $2, $3)")
        .bind(name)
        .bind(saved_model_id)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let created = row.created_at == row.updated_at;
    Ok((row, created))
}

pub async fn get(store: &Store, name: &str) -> Result<AliasRow, Error> {
    let row = sqlx::query("SELECT name, saved_model_id, created_at, updated_at FROM aliases WHERE name = $1")
        .bind(name)
        .fetch_optional(&store.pool)
        .await?
        .ok_or(Error::NotFound("alias"))?;
    Ok(from_row(&row)?)
}

/// The saved model an alias points at, if `name` is an alias.
pub async fn resolve(store: &Store, name: &str) -> Result<Option<String>, Error> {
    Ok(
        sqlx::query_scalar("SELECT saved_model_id FROM aliases WHERE name = $1")
            .bind(name)
            .fetch_optional(&store.pool)
            .await?,
    )
}

/// Aliases by name after `after`, optionally only those pointing at `saved_model_id`.
pub async fn list(
    store: &Store,
    saved_model_id: Option<&str>,
    limit: i64,
    after: Option<&str>,
) -> Result<super::Page<AliasRow>, Error> {
    let rows = sqlx::query(
        "SELECT name, saved_model_id, created_at, updated_at FROM aliases \
         WHERE name > $1 AND ($2 IS NULL OR saved_model_id = $2) ORDER BY name LIMIT $3",
    )
    .bind(after.unwrap_or(""))
    .bind(saved_model_id)
    .bind(limit + 1)
    .fetch_all(&store.pool)
    .await?;
    let items = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(super::Page::from_rows(items, limit, |r| &r.name))
}

/// Deletes an alias, recording it in the history.
pub async fn delete(store: &Store, name: &str) -> Result<(), Error> {
    let mut tx = store.pool.begin().await?;
    let done = sqlx::query("DELETE FROM aliases WHERE name = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound("alias"));
    }
    sqlx::query("INSERT INTO alias_history (name, saved_model_id, created_at) VALUES ($1, NULL, $2)")
        .bind(name)
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// The latest `limit` moves of an alias, newest first (`NotFound` if it never existed).
pub async fn history(store: &Store, name: &str, limit: i64) -> Result<Vec<HistoryRow>, Error> {
    let rows = sqlx::query(
        "SELECT saved_model_id, created_at FROM alias_history WHERE name = $1 ORDER BY seq DESC LIMIT $2",
    )
    .bind(name)
    .bind(limit)
    .fetch_all(&store.pool)
    .await?;
    if rows.is_empty() {
        return Err(Error::NotFound("alias"));
    }
    rows.iter()
        .map(|r| {
            Ok(HistoryRow {
                saved_model_id: r.try_get("saved_model_id")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}
