//! SQL for model architectures (`models` table).

use sqlx::Row;

use super::{Error, Page, Store, map_sqlx};

/// A stored model architecture; `spec` is the JSON of `domain::model::ModelSpec`.
#[derive(Debug, Clone)]
pub struct ModelRow {
    pub id: String,
    pub name: String,
    pub spec: String,
    /// Set once a training job has used the model; the spec is frozen from then on.
    pub locked: bool,
    pub created_at: String,
    pub updated_at: String,
}

fn from_row(r: &sqlx::any::AnyRow) -> Result<ModelRow, sqlx::Error> {
    Ok(ModelRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        spec: r.try_get("spec")?,
        locked: r.try_get::<i64, _>("locked")? != 0,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

pub async fn insert(store: &Store, row: &ModelRow) -> Result<(), Error> {
    insert_with(&store.pool, row).await
}

/// [`insert`] on any executor, so it can share a transaction with the rows that depend on it.
pub async fn insert_with<'e, E>(executor: E, row: &ModelRow) -> Result<(), Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO models (id, name, spec, locked, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&row.id)
    .bind(&row.name)
    .bind(&row.spec)
    .bind(row.locked as i64)
    .bind(&row.created_at)
    .bind(&row.updated_at)
    .execute(executor)
    .await
    .map_err(map_sqlx)?;
    Ok(())
}

pub async fn get(store: &Store, id: &str) -> Result<ModelRow, Error> {
    let row = sqlx::query("SELECT id, name, spec, locked, created_at, updated_at FROM models WHERE id = $1")
        .bind(id)
        .fetch_optional(&store.pool)
        .await?
        .ok_or(Error::NotFound("model"))?;
    Ok(from_row(&row)?)
}

/// Models in creation order, `limit` of them after the model with id `after`.
pub async fn list(store: &Store, limit: i64, after: Option<&str>) -> Result<Page<ModelRow>, Error> {
    let after_seq = super::cursor_seq(store, super::Listed::Models, after).await?;
    let rows = sqlx::query(
        "SELECT id, name, spec, locked, created_at, updated_at FROM models WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
        .bind(after_seq)
        .bind(limit + 1)
        .fetch_all(&store.pool)
        .await?;
    let items = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(super::Page::from_rows(items, limit, |r| &r.id))
}

pub async fn delete(store: &Store, id: &str, cascade: bool) -> Result<(), Error> {
    // The first statement writes, so the transaction holds the write lock throughout: no job can be
    // queued between the checks and the delete.
    let mut tx = store.pool.begin().await?;
    let done = sqlx::query(
        "DELETE FROM models WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM jobs \
         WHERE (model_id = $1) AND (status IN ('queued', 'running') OR NOT $2))",
    )
    .bind(id)
    .bind(cascade)
    .execute(&mut *tx)
    .await
    .map_err(map_sqlx)?;
    if done.rows_affected() == 0 {
        drop(tx);
        get(store, id).await?;
        let unfinished: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE (model_id = $1) AND status IN ('queued', 'running') ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&store.pool)
        .await?;
        if !unfinished.is_empty() {
            return Err(Error::Conflict(format!(
                "model {id:?} is used by a queued or running job ({}); cancel the job or wait for it to finish",
                super::name_jobs(&unfinished, unfinished.len() as i64)
            )));
        }
        let used: Vec<String> =
            sqlx::query_scalar("SELECT id FROM jobs WHERE (model_id = $1) ORDER BY seq LIMIT 5")
                .bind(id)
                .fetch_all(&store.pool)
                .await?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE model_id = $1")
            .bind(id)
            .fetch_one(&store.pool)
            .await?;
        return Err(Error::Conflict(format!(
            "model {id:?} is used by the finished jobs {}; delete them, or pass cascade=true to delete \
             them with it",
            super::name_jobs(&used, total)
        )));
    }
    if cascade {
        sqlx::query("DELETE FROM jobs WHERE model_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    super::reclaim_space(store).await;
    Ok(())
}

/// Replaces the spec of an unlocked model, only if it still equals `old_spec`, so two concurrent
/// appends cannot silently drop one another and nothing changes after a job locked the model.
pub async fn update_spec(store: &Store, id: &str, old_spec: &str, new_spec: &str) -> Result<(), Error> {
    let done = sqlx::query(
        "UPDATE models SET spec = $1, updated_at = $2 WHERE id = $3 AND locked = 0 AND spec = $4",
    )
    .bind(new_spec)
    .bind(super::now_rfc3339())
    .bind(id)
    .bind(old_spec)
    .execute(&store.pool)
    .await?;
    if done.rows_affected() == 1 {
        return Ok(());
    }
    let row = get(store, id).await?;
    if row.locked {
        Err(Error::Conflict(format!(
            "model {id:?} has been used by a training job; its layers can no longer change"
        )))
    } else {
        Err(Error::Conflict(format!(
            "model {id:?} was changed concurrently; retry"
        )))
    }
}

/// Freezes a model's spec; called when a training job starts using it.
pub async fn lock(store: &Store, id: &str) -> Result<(), Error> {
    let done = sqlx::query("UPDATE models SET locked = 1 WHERE id = $1")
        .bind(id)
        .execute(&store.pool)
        .await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound("model"));
    }
    Ok(())
}
