//! Datasets: metadata rows in SQLite, decoded arrays as files ([`super::arrays`]).
//!
//! Arrays are written and moved into place before the row is inserted, and a failed insert removes
//! them, so a row never points at missing data and failures leave nothing behind.

use std::collections::BTreeMap;
use std::sync::Arc;

use ndarray::{Array2, ArrayD};
use sqlx::Row;

use super::arrays::ArrayFiles;
use super::cache::CachedArrays;
use super::{Error, Page, Store, map_sqlx};
use crate::data::{Dataset, Labels};
use crate::domain::dataset::DatasetKind;

/// A stored dataset's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetRow {
    pub id: String,
    pub name: String,
    pub kind: DatasetKind,
    /// Where it came from: `idx`, `csv`, `npz`, `npy`, `builtin:<name>`, `download:<name>/<split>`, `pca`.
    pub source: String,
    pub n_samples: u64,
    pub input_shape: Vec<usize>,
    pub n_features: u64,
    pub n_classes: Option<u64>,
    pub n_targets: Option<u64>,
    pub class_counts: Option<BTreeMap<u32, u64>>,
    pub feature_min: f32,
    pub feature_max: f32,
    pub size_bytes: u64,
    pub parent_id: Option<String>,
    pub derivation: Option<serde_json::Value>,
    /// The 2-D shape sample PNGs are drawn in, when there is one.
    pub image_shape: Option<Vec<usize>>,
    pub created_at: String,
}

/// What the caller decides about a new dataset; statistics come from the data.
#[derive(Debug, Clone)]
pub struct NewDataset {
    pub name: String,
    pub source: String,
    pub parent_id: Option<String>,
    pub derivation: Option<serde_json::Value>,
    /// Overrides the PNG shape (derived datasets draw in their parent's shape).
    pub image_shape: Option<Vec<usize>>,
    /// Extra float32 arrays stored next to `x.npy`/`y.npy`, by file stem.
    pub extra: Vec<(String, ArrayD<f32>)>,
}

/// The arrays a training job needs.
#[derive(Debug, Clone)]
pub struct DatasetArrays {
    /// `(n_samples, features)`, shared with the dataset cache and every job using it.
    pub x: Arc<Array2<f32>>,
    pub labels: Labels,
    pub input_shape: Vec<usize>,
}

fn json_err(e: serde_json::Error) -> Error {
    Error::Corrupt(e.to_string())
}

fn from_row(r: &sqlx::any::AnyRow) -> Result<DatasetRow, Error> {
    let kind: String = r.try_get("kind")?;
    let parse_shape = |s: Option<String>| -> Result<Option<Vec<usize>>, Error> {
        s.map(|s| serde_json::from_str(&s).map_err(json_err)).transpose()
    };
    Ok(DatasetRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        kind: DatasetKind::parse(&kind).ok_or_else(|| Error::Corrupt(format!("dataset kind {kind:?}")))?,
        source: r.try_get("source")?,
        n_samples: r.try_get::<i64, _>("n_samples")? as u64,
        input_shape: parse_shape(Some(r.try_get("input_shape")?))?.unwrap_or_default(),
        n_features: r.try_get::<i64, _>("n_features")? as u64,
        n_classes: r.try_get::<Option<i64>, _>("n_classes")?.map(|v| v as u64),
        n_targets: r.try_get::<Option<i64>, _>("n_targets")?.map(|v| v as u64),
        class_counts: r
            .try_get::<Option<String>, _>("class_counts")?
            .map(|s| serde_json::from_str(&s).map_err(json_err))
            .transpose()?,
        feature_min: r.try_get::<f64, _>("feature_min")? as f32,
        feature_max: r.try_get::<f64, _>("feature_max")? as f32,
        size_bytes: r.try_get::<i64, _>("size_bytes")? as u64,
        parent_id: r.try_get("parent_id")?,
        derivation: r
            .try_get::<Option<String>, _>("derivation")?
            .map(|s| serde_json::from_str(&s).map_err(json_err))
            .transpose()?,
        image_shape: parse_shape(r.try_get("image_shape")?)?,
        created_at: r.try_get("created_at")?,
    })
}

/// The 2-D shape a sample is drawn in: `(h, w)` inputs, or `(h, w, 1)`.
fn image_shape_of(input_shape: &[usize]) -> Option<Vec<usize>> {
    match input_shape {
        [h, w] | [h, w, 1] => Some(vec![*h, *w]),
        _ => None,
    }
}

/// Writes the arrays, moves them into place and inserts the row; on any failure nothing remains.
///
/// The work runs as its own task, so a caller that goes away midway (a client disconnecting) cannot
/// leave arrays in place without their row.
pub async fn create(store: &Store, new: NewDataset, data: Dataset) -> Result<DatasetRow, Error> {
    let store = store.clone();
    tokio::spawn(async move { create_now(&store, new, data).await })
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?
}

async fn create_now(store: &Store, new: NewDataset, data: Dataset) -> Result<DatasetRow, Error> {
    let id = super::new_id();
    let stats = data.stats();
    let input_shape = data.input_shape.clone();
    let files = ArrayFiles::new(store.data_dir());
    let extra = new.extra;
    let size_bytes = {
        let (files, id) = (files.clone(), id.clone());
        tokio::task::spawn_blocking(move || files.write(&id, &data, &extra))
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))??
    };
    let row = DatasetRow {
        id: id.clone(),
        name: new.name,
        kind: stats.kind,
        source: new.source,
        n_samples: stats.n_samples as u64,
        image_shape: new.image_shape.or_else(|| image_shape_of(&input_shape)),
        input_shape,
        n_features: stats.n_features as u64,
        n_classes: stats.n_classes.map(|n| n as u64),
        n_targets: stats.n_targets.map(|n| n as u64),
        class_counts: stats.class_counts,
        feature_min: stats.feature_min,
        feature_max: stats.feature_max,
        size_bytes,
        parent_id: new.parent_id,
        derivation: new.derivation,
        created_at: super::now_rfc3339(),
    };
    if let Err(e) = insert(store, &row).await {
        let _ = tokio::task::spawn_blocking(move || files.remove(&id)).await;
        return Err(e);
    }
    Ok(row)
}

async fn insert(store: &Store, row: &DatasetRow) -> Result<(), Error> {
    let mut tx = store.pool.begin().await?;
    sqlx::query(
        "INSERT INTO datasets (id, name, kind, source, n_samples, input_shape, n_features, n_classes, \
         n_targets, class_counts, feature_min, feature_max, size_bytes, parent_id, derivation, image_shape, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    )
    .bind(&row.id)
    .bind(&row.name)
    .bind(row.kind.as_str())
    .bind(&row.source)
    .bind(row.n_samples as i64)
    .bind(to_json(&row.input_shape))
    .bind(row.n_features as i64)
    .bind(row.n_classes.map(|v| v as i64))
    .bind(row.n_targets.map(|v| v as i64))
    .bind(row.class_counts.as_ref().map(to_json))
    .bind(row.feature_min as f64)
    .bind(row.feature_max as f64)
    .bind(row.size_bytes as i64)
    .bind(&row.parent_id)
    .bind(row.derivation.as_ref().map(to_json))
    .bind(row.image_shape.as_ref().map(to_json))
    .bind(&row.created_at)
    .execute(&mut *tx)
    .await
    .map_err(map_sqlx)?;
    if store.backend() == super::Backend::Postgres {
        super::shared_files::upload(&mut tx, &row.id, &store.dataset_dir(&row.id)).await?;
    }
    tx.commit().await?;
    Ok(())
}

fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).expect("column values always serialize")
}

pub async fn get(store: &Store, id: &str) -> Result<DatasetRow, Error> {
    let row = sqlx::query("SELECT * FROM datasets WHERE id = $1")
        .bind(id)
        .fetch_optional(&store.pool)
        .await?
        .ok_or(Error::NotFound("dataset"))?;
    from_row(&row)
}

/// Datasets in creation order, `limit` of them after the dataset with id `after`.
pub async fn list(store: &Store, limit: i64, after: Option<&str>) -> Result<Page<DatasetRow>, Error> {
    let after_seq = super::cursor_seq(store, super::Listed::Datasets, after).await?;
    let rows = sqlx::query("SELECT * FROM datasets WHERE seq > $1 ORDER BY seq LIMIT $2")
        .bind(after_seq)
        .bind(limit + 1)
        .fetch_all(&store.pool)
        .await?;
    let items = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(super::Page::from_rows(items, limit, |r| &r.id))
}

/// Deletes the row (refused while other rows reference it) and then its files.
pub async fn delete(store: &Store, id: &str, cascade: bool) -> Result<(), Error> {
    // The first statement writes, so the transaction holds the write lock throughout: no job can be
    // queued between the checks and the delete.
    let mut tx = store.pool.begin().await?;
    let done = sqlx::query(
        "DELETE FROM datasets WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM jobs \
         WHERE (dataset_id = $1 OR validation_dataset_id = $1) AND (status IN ('queued', 'running') OR NOT $2))",
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
            "SELECT id FROM jobs WHERE (dataset_id = $1 OR validation_dataset_id = $1) AND status IN ('queued', 'running') ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&store.pool)
        .await?;
        if !unfinished.is_empty() {
            return Err(Error::Conflict(format!(
                "dataset {id:?} is used by a queued or running job ({}); cancel the job or wait for it to finish",
                super::name_jobs(&unfinished, unfinished.len() as i64)
            )));
        }
        let used: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE (dataset_id = $1 OR validation_dataset_id = $1) ORDER BY seq LIMIT 5",
        )
        .bind(id)
        .fetch_all(&store.pool)
        .await?;
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE dataset_id = $1 OR validation_dataset_id = $1",
        )
        .bind(id)
        .fetch_one(&store.pool)
        .await?;
        return Err(Error::Conflict(format!(
            "dataset {id:?} is used by the finished jobs {}; delete them, or pass cascade=true to delete \
             them with it",
            super::name_jobs(&used, total)
        )));
    }
    if cascade {
        sqlx::query("DELETE FROM jobs WHERE dataset_id = $1 OR validation_dataset_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    let gone = super::notify::Notice::DatasetDeleted { id: id.to_string() };
    super::notify::announce(&mut tx, &gone).await?;
    tx.commit().await?;
    store.dataset_cache().invalidate(id);
    super::reclaim_space(store).await;
    let files = ArrayFiles::new(store.data_dir());
    let owned = id.to_string();
    let removed = tokio::task::spawn_blocking(move || files.remove(&owned)).await;
    if let Ok(Err(e)) = removed {
        tracing::warn!(dataset = id, error = %e, "could not remove dataset files");
    }
    Ok(())
}

/// Loads a dataset's features (as float32) and labels, for training and evaluation: from the
/// dataset cache, or else from its files (then cached; concurrent loads of one dataset share one
/// read).
pub async fn load_arrays(store: &Store, id: &str) -> Result<DatasetArrays, Error> {
    let row = get(store, id).await?;
    if !store.dataset_cache().contains(id) {
        super::shared_files::ensure_local(store, id).await?;
    }
    let files = ArrayFiles::new(store.data_dir());
    let kind = row.kind;
    let cached = store
        .dataset_cache()
        .get_or_load(id, || {
            let id = id.to_string();
            async move {
                tokio::task::spawn_blocking(move || -> Result<CachedArrays, Error> {
                    Ok(CachedArrays {
                        x: Arc::new(files.read_features(&id)?.into_f32()),
                        labels: files.read_labels(&id, kind)?,
                    })
                })
                .await
                .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?
            }
        })
        .await?;
    Ok(DatasetArrays {
        x: Arc::clone(&cached.x),
        labels: cached.labels.clone(),
        input_shape: row.input_shape,
    })
}

/// Reads an extra array stored with a dataset (e.g. `pca_components`).
pub async fn load_extra(store: &Store, id: &str, name: &str) -> Result<ArrayD<f32>, Error> {
    super::shared_files::ensure_local(store, id).await?;
    let files = ArrayFiles::new(store.data_dir());
    let (id, name) = (id.to_string(), name.to_string());
    tokio::task::spawn_blocking(move || files.read_extra(&id, &name))
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?
}

/// One sample's features and its label, read by seeking instead of loading the whole array.
pub async fn read_sample(store: &Store, row: &DatasetRow, index: u64) -> Result<(Vec<f32>, String), Error> {
    super::shared_files::ensure_local(store, &row.id).await?;
    let files = ArrayFiles::new(store.data_dir());
    let id = row.id.clone();
    tokio::task::spawn_blocking(move || -> Result<(Vec<f32>, String), Error> {
        let index = usize::try_from(index).map_err(|_| Error::NotFound("sample"))?;
        Ok((files.read_feature_row(&id, index)?, files.read_label(&id, index)?))
    })
    .await
    .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?
}
