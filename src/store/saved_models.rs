//! SQL for trained weights (`saved_models` table) and their storage format: safetensors bytes of
//! `nn::Model::tensors()`.

use std::collections::HashMap;

use sqlx::{AssertSqlSafe, Row};

use super::{Error, Store, map_sqlx};
use crate::nn::NamedTensor;
use crate::nn::tensor_file;

/// Where a saved model's weights came from (the `source` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SavedModelSource {
    /// The final (or restored best) weights of a succeeded job.
    Job,
    /// A stored checkpoint of a job.
    Checkpoint,
    /// A `.safetensors` upload for an architecture.
    WeightsUpload,
    /// An exported model file loaded back.
    Import,
}

impl SavedModelSource {
    pub fn as_str(self) -> &'static str {
        match self {
            SavedModelSource::Job => "job",
            SavedModelSource::Checkpoint => "checkpoint",
            SavedModelSource::WeightsUpload => "weights_upload",
            SavedModelSource::Import => "import",
        }
    }

    pub fn parse(s: &str) -> Option<SavedModelSource> {
        match s {
            "job" => Some(SavedModelSource::Job),
            "checkpoint" => Some(SavedModelSource::Checkpoint),
            "weights_upload" => Some(SavedModelSource::WeightsUpload),
            "import" => Some(SavedModelSource::Import),
            _ => None,
        }
    }
}

/// One row of `saved_models`.
#[derive(Debug, Clone)]
pub struct SavedModelRow {
    pub id: String,
    /// The architecture (`models.id`) the weights instantiate.
    pub model_id: String,
    pub job_id: Option<String>,
    /// 0-based epoch of the weights, when they come from a job.
    pub epoch: Option<i64>,
    pub source: SavedModelSource,
    /// JSON object of that epoch's metrics (`{}` when unknown).
    pub metrics: String,
    /// JSON snapshot of the model spec as trained.
    pub spec: String,
    /// Safetensors bytes, see [`encode_weights`].
    pub weights: Vec<u8>,
    pub created_at: String,
}

fn from_row(r: &sqlx::any::AnyRow) -> Result<SavedModelRow, Error> {
    let source: String = r.try_get("source")?;
    Ok(SavedModelRow {
        id: r.try_get("id")?,
        model_id: r.try_get("model_id")?,
        job_id: r.try_get("job_id")?,
        epoch: r.try_get("epoch")?,
        source: SavedModelSource::parse(&source)
            .ok_or_else(|| Error::Corrupt(format!("unknown saved model source {source:?}")))?,
        metrics: r.try_get("metrics")?,
        spec: r.try_get("spec")?,
        weights: r.try_get("weights")?,
        created_at: r.try_get("created_at")?,
    })
}

const COLUMNS: &str = "id, model_id, job_id, epoch, source, metrics, spec, weights, created_at";

/// Inserts a saved model on any executor (the pool or an open transaction).
pub async fn insert_with<'e, E>(executor: E, row: &SavedModelRow) -> Result<(), Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO saved_models (id, model_id, job_id, epoch, source, metrics, spec, weights, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&row.id)
    .bind(&row.model_id)
    .bind(&row.job_id)
    .bind(row.epoch)
    .bind(row.source.as_str())
    .bind(&row.metrics)
    .bind(&row.spec)
    .bind(&row.weights)
    .bind(&row.created_at)
    .execute(executor)
    .await
    .map_err(map_sqlx)?;
    Ok(())
}

pub async fn insert(store: &Store, row: &SavedModelRow) -> Result<(), Error> {
    insert_with(&store.pool, row).await
}

pub async fn get(store: &Store, id: &str) -> Result<SavedModelRow, Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM saved_models WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&store.pool)
    .await?
    .ok_or(Error::NotFound("saved model"))?;
    from_row(&row)
}

/// Safetensors bytes of a model's tensors (names as `Model::tensors` gives them, f32 little-endian),
/// the format Keras-side tools and `GET /v1/saved-models/{id}/weights` use.
pub fn encode_weights(tensors: &[NamedTensor]) -> Vec<u8> {
    tensor_file::encode(tensors, HashMap::new())
}

/// Reads [`encode_weights`] bytes back, in the order they are stored (sorted by name).
pub fn decode_weights(bytes: &[u8]) -> Result<Vec<NamedTensor>, Error> {
    tensor_file::decode(bytes)
        .map(|(tensors, _)| tensors)
        .map_err(|e| Error::Corrupt(format!("weights: {e}")))
}

/// A saved model without its weights: what lists and views need.
#[derive(Debug, Clone)]
pub struct SavedModelInfo {
    pub id: String,
    pub model_id: String,
    pub job_id: Option<String>,
    pub epoch: Option<i64>,
    pub source: SavedModelSource,
    pub metrics: String,
    pub spec: String,
    /// Length of the stored weights blob.
    pub size_bytes: i64,
    pub created_at: String,
}

fn info_from_row(r: &sqlx::any::AnyRow) -> Result<SavedModelInfo, Error> {
    let source: String = r.try_get("source")?;
    Ok(SavedModelInfo {
        id: r.try_get("id")?,
        model_id: r.try_get("model_id")?,
        job_id: r.try_get("job_id")?,
        epoch: r.try_get("epoch")?,
        source: SavedModelSource::parse(&source)
            .ok_or_else(|| Error::Corrupt(format!("unknown saved model source {source:?}")))?,
        metrics: r.try_get("metrics")?,
        spec: r.try_get("spec")?,
        size_bytes: r.try_get("size_bytes")?,
        created_at: r.try_get("created_at")?,
    })
}

pub async fn get_info(store: &Store, id: &str) -> Result<SavedModelInfo, Error> {
    let row = sqlx::query(
        "SELECT id, model_id, job_id, epoch, source, metrics, spec, length(weights) AS size_bytes, created_at \
         FROM saved_models WHERE id = $1",
    )
        .bind(id)
        .fetch_optional(&store.pool)
        .await?
        .ok_or(Error::NotFound("saved model"))?;
    info_from_row(&row)
}

/// Saved models in creation order, `limit` of them after the one with id `after`, optionally only
/// those of one architecture or job.
pub async fn list(
    store: &Store,
    limit: i64,
    after: Option<&str>,
    model_id: Option<&str>,
    job_id: Option<&str>,
) -> Result<super::Page<SavedModelInfo>, Error> {
    let after_seq = super::cursor_seq(store, super::Listed::SavedModels, after).await?;
    let rows = sqlx::query(
        "SELECT id, model_id, job_id, epoch, source, metrics, spec, length(weights) AS size_bytes, created_at \
         FROM saved_models WHERE seq > $1 AND ($2 IS NULL OR model_id = $3) AND ($4 IS NULL OR job_id = $5) \
         ORDER BY seq LIMIT $6",
    )
    .bind(after_seq)
    .bind(model_id)
    .bind(model_id)
    .bind(job_id)
    .bind(job_id)
    .bind(limit + 1)
    .fetch_all(&store.pool)
    .await?;
    let items = rows.iter().map(info_from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(super::Page::from_rows(items, limit, |r| &r.id))
}

/// Deletes a saved model unless an alias points at it or a queued or running job continues
/// training from it (`initial_weights`); the checks and the delete are one statement, so neither can
/// slip in between.
pub async fn delete(store: &Store, id: &str) -> Result<(), Error> {
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM saved_models WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM jobs \
         WHERE status IN ('queued', 'running') AND {initial} = $1) \
         AND NOT EXISTS (SELECT 1 FROM aliases WHERE saved_model_id = $1)",
        initial = store.backend().json_text("request", "initial_weights")
    )))
    .bind(id)
    .execute(&store.pool)
    .await
    .map_err(map_sqlx)?;
    if done.rows_affected() == 1 {
        let gone = super::notify::Notice::SavedModelDeleted { id: id.to_string() };
        super::notify::announce_now(store, &gone).await?;
        return Ok(());
    }
    let mut tx = store.pool.begin().await?;
    check_unused(&mut tx, store.backend(), id).await?;
    Err(Error::NotFound("saved model"))
}

/// Refuses (`Conflict`) to delete a saved model an alias points at or a queued or running job
/// starts from; inside the deleting transaction, so neither can appear in between.
pub async fn check_unused(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: super::Backend,
    id: &str,
) -> Result<(), Error> {
    let alias: Option<String> =
        sqlx::query_scalar("SELECT name FROM aliases WHERE saved_model_id = $1 ORDER BY name LIMIT 1")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
    if let Some(alias) = alias {
        return Err(Error::Conflict(format!(
            "saved model {id:?} is the target of alias {alias:?}; move or delete the alias first"
        )));
    }
    let job: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM jobs WHERE status IN ('queued', 'running') AND {initial} = $1 ORDER BY seq LIMIT 1",
        initial = backend.json_text("request", "initial_weights")
    )))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(job) = job {
        return Err(Error::Conflict(format!(
            "saved model {id:?} is the initial_weights of job {job:?}, which is still queued or running"
        )));
    }
    Ok(())
}

/// A job as far as making a saved model from its checkpoint needs it.
#[derive(Debug, Clone)]
pub struct JobRef {
    pub model_id: String,
    pub status: String,
}

pub async fn job_ref(store: &Store, job_id: &str) -> Result<JobRef, Error> {
    let row = sqlx::query("SELECT model_id, status FROM jobs WHERE id = $1")
        .bind(job_id)
        .fetch_optional(&store.pool)
        .await?
        .ok_or(Error::NotFound("job"))?;
    Ok(JobRef {
        model_id: row.try_get("model_id")?,
        status: row.try_get("status")?,
    })
}

/// The training state and metrics JSON of a job's checkpoint at `epoch`.
pub async fn checkpoint_state(store: &Store, job_id: &str, epoch: i64) -> Result<(Vec<u8>, String), Error> {
    let row = sqlx::query("SELECT state, metrics FROM checkpoints WHERE job_id = $1 AND epoch = $2")
        .bind(job_id)
        .bind(epoch)
        .fetch_optional(&store.pool)
        .await?
        .ok_or(Error::NotFound("checkpoint"))?;
    Ok((row.try_get("state")?, row.try_get("metrics")?))
}

/// Epochs of a job that have a stored checkpoint, ascending.
pub async fn checkpoint_epochs(store: &Store, job_id: &str) -> Result<Vec<i64>, Error> {
    Ok(
        sqlx::query_scalar("SELECT epoch FROM checkpoints WHERE job_id = $1 ORDER BY epoch")
            .bind(job_id)
            .fetch_all(&store.pool)
            .await?,
    )
}
