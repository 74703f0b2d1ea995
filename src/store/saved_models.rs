//! SQL for trained weights (`saved_models` table) and their storage format: safetensors bytes of
//! `nn::Model::tensors()`.

use std::collections::HashMap;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use sqlx::{AssertSqlSafe, Row};

use super::{Error, Store, map_sqlx};
use crate::nn::NamedTensor;

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

const COLUMNS: &str = "id, model_id, job_id, epoch, source, metrics, spec, weights, created_at";

fn from_row(r: &sqlx::sqlite::SqliteRow) -> Result<SavedModelRow, Error> {
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

/// Inserts a saved model on any executor (the pool or an open transaction).
pub async fn insert_with<'e, E>(executor: E, row: &SavedModelRow) -> Result<(), Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    sqlx::query(
        "INSERT INTO saved_models (id, model_id, job_id, epoch, source, metrics, spec, weights, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    let row = sqlx::query(AssertSqlSafe(format!("SELECT {COLUMNS} FROM saved_models WHERE id = ?")))
        .bind(id)
        .fetch_optional(&store.pool)
        .await?
        .ok_or(Error::NotFound("saved model"))?;
    from_row(&row)
}

/// Safetensors bytes of a model's tensors (names as `Model::tensors` gives them, f32 little-endian),
/// the format Keras-side tools and `GET /v1/saved-models/{id}/weights` use.
pub fn encode_weights(tensors: &[NamedTensor]) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| t.data.iter().flat_map(|f| f.to_le_bytes()).collect())
        .collect();
    let views = tensors.iter().zip(&bytes).map(|(t, b)| {
        (
            t.name.clone(),
            TensorView::new(Dtype::F32, t.shape.clone(), b).expect("a tensor's shape matches its data"),
        )
    });
    safetensors::serialize(views, None::<HashMap<String, String>>)
        .expect("serialising in-memory f32 tensors cannot fail")
}

/// Reads [`encode_weights`] bytes back, in the order they are stored (sorted by name).
pub fn decode_weights(bytes: &[u8]) -> Result<Vec<NamedTensor>, Error> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Corrupt(format!("weights: {e}")))?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(Error::Corrupt(format!(
                "weights: tensor {name} is {:?}, not F32",
                view.dtype()
            )));
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.push(NamedTensor {
            name,
            shape: view.shape().to_vec(),
            data,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
