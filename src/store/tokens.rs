//! SQL for API tokens (`api_tokens` table). Only hashes are stored; see [`crate::auth`].

use sqlx::Row;

use super::{Error, Store, map_sqlx};

/// A stored token, without its secret.
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: String,
    pub name: String,
    /// Comma-separated scopes.
    pub scopes: String,
    pub prefix: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

fn from_row(r: &sqlx::any::AnyRow) -> Result<TokenRow, sqlx::Error> {
    Ok(TokenRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        scopes: r.try_get("scopes")?,
        prefix: r.try_get("prefix")?,
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

pub async fn insert(store: &Store, row: &TokenRow, token_hash: &str) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO api_tokens (id, name, scopes, token_hash, prefix, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&row.id)
    .bind(&row.name)
    .bind(&row.scopes)
    .bind(token_hash)
    .bind(&row.prefix)
    .bind(&row.created_at)
    .execute(&store.pool)
    .await
    .map_err(map_sqlx)?;
    Ok(())
}

/// Every token, revoked ones included, oldest first.
pub async fn list(store: &Store) -> Result<Vec<TokenRow>, Error> {
    let rows =
        sqlx::query("SELECT id, name, scopes, prefix, created_at, revoked_at FROM api_tokens ORDER BY seq")
            .fetch_all(&store.pool)
            .await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

pub async fn get(store: &Store, id: &str) -> Result<TokenRow, Error> {
    let row =
        sqlx::query("SELECT id, name, scopes, prefix, created_at, revoked_at FROM api_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&store.pool)
            .await?
            .ok_or(Error::NotFound("token"))?;
    Ok(from_row(&row)?)
}

/// The live (not revoked) token with this hash, and the hash as stored.
pub async fn find_live_by_hash(store: &Store, token_hash: &str) -> Result<Option<(TokenRow, String)>, Error> {
    let row = sqlx::query(
        "SELECT id, name, scopes, prefix, created_at, revoked_at, token_hash FROM api_tokens \
         WHERE token_hash = $1 AND revoked_at IS NULL",
    )
    .bind(token_hash)
    .fetch_optional(&store.pool)
    .await?;
    match row {
        None => Ok(None),
        Some(r) => Ok(Some((from_row(&r)?, r.try_get("token_hash")?))),
    }
}

/// Whether a token with this hash was ever registered (revoked or not).
pub async fn hash_exists(store: &Store, token_hash: &str) -> Result<bool, Error> {
    Ok(sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM (SELECT 1 FROM api_tokens WHERE token_hash = $1 LIMIT 1) AS t",
    )
    .bind(token_hash)
    .fetch_one(&store.pool)
    .await?
        != 0)
}

/// Whether any token was ever created; from then on authentication is enforced.
pub async fn any(store: &Store) -> Result<bool, Error> {
    Ok(
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM (SELECT 1 FROM api_tokens LIMIT 1) AS t")
            .fetch_one(&store.pool)
            .await?
            != 0,
    )
}

/// Marks a token revoked; revoking a revoked token changes nothing. `NotFound` for an unknown id.
pub async fn revoke(store: &Store, id: &str, now: &str) -> Result<TokenRow, Error> {
    sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(id)
        .execute(&store.pool)
        .await?;
    get(store, id).await
}
