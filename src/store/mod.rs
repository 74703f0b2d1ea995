//! All SQL and on-disk storage: the database pool (SQLite or PostgreSQL, see [`backend`]),
//! migrations, and dataset array files.
//!
//! Layout: the database file `<dir>/<stem>.db` and, next to it, `<dir>/<stem>-data/` holding one
//! directory of `.npy` arrays per dataset (`datasets/<id>/`), written under a temporary name and
//! renamed into place before the metadata row is inserted, so a crash never leaves a row without data.

pub mod aliases;
pub mod arrays;
pub mod backend;
pub mod cache;
pub mod datasets;
pub mod jobs;
pub mod lock;
pub mod models;
pub mod notify;
pub mod saved_models;
pub mod searches;
pub mod shared_files;
pub mod sweep;
pub mod tokens;
pub mod webhooks;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sqlx::AnyPool;

pub use backend::{Backend, Db};

/// Storage failures; the HTTP layer maps them to problems.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("file error: {0}")]
    Io(#[from] std::io::Error),
    #[error("stored array is unreadable: {0}")]
    Corrupt(String),
    /// A worker wrote for a job whose claim (lease) it no longer holds: another worker took the job
    /// over after the lease expired. Nothing was written.
    #[error("the claim on job {0:?} passed to another worker")]
    StaleClaim(String),
    /// Another server holds the database's lock.
    #[error(
        "another fitd process{} is serving the database {}; stop it, or give this one another --db",
        owner.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        db.display()
    )]
    Locked { db: PathBuf, owner: Option<u32> },
}

/// The database pool plus the directory holding dataset arrays; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pub pool: AnyPool,
    backend: Backend,
    data_dir: Arc<PathBuf>,
    /// Decoded datasets shared by the jobs that read them.
    dataset_cache: Arc<cache::DatasetCache>,
}

/// The dataset cache's budget until the server sets its own (`--dataset-cache-bytes`).
pub const DEFAULT_DATASET_CACHE_BYTES: u64 = 1 << 30;

/// The data directory of a SQLite database: `<dir>/<stem>-data` next to the file.
pub fn sqlite_data_dir(db_path: &Path) -> PathBuf {
    let stem = db_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "fitd".into());
    db_path
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!("{stem}-data"))
}

/// The data directory a node uses when none is given: next to a SQLite file, `./fitd-data` with
/// PostgreSQL.
pub fn default_data_dir(db: &Db) -> PathBuf {
    match db {
        Db::Sqlite(p) => sqlite_data_dir(p),
        Db::Postgres(_) => PathBuf::from("./fitd-data"),
    }
}

impl Store {
    /// Opens (creating if missing) the database and applies pending migrations; file storage goes
    /// to `data_dir` (by default [`default_data_dir`]).
    pub async fn open(db: &Db, data_dir: Option<&Path>) -> Result<Store, Error> {
        if let Db::Sqlite(db_path) = db
            && let Some(parent) = db_path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)?;
        }
        let pool = backend::connect(db).await?;
        match db.backend() {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        let dir = data_dir.map_or_else(|| default_data_dir(db), Path::to_path_buf);
        std::fs::create_dir_all(dir.join("datasets"))?;
        std::fs::create_dir_all(dir.join("tmp"))?;
        Ok(Store {
            pool,
            backend: db.backend(),
            data_dir: Arc::new(dir),
            dataset_cache: Arc::new(cache::DatasetCache::new(DEFAULT_DATASET_CACHE_BYTES)),
        })
    }

    /// The SQL dialect of the database.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// `<db stem>-data/`, the root of file storage.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The decoded datasets held in memory for jobs.
    pub fn dataset_cache(&self) -> &cache::DatasetCache {
        &self.dataset_cache
    }

    /// Where a dataset's arrays live.
    pub fn dataset_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("datasets").join(id)
    }

    /// Scratch space on the same file system as the data, so finished files can be renamed into place.
    pub fn tmp_dir(&self) -> PathBuf {
        self.data_dir.join("tmp")
    }

    /// Checks the database answers; used by `/readyz`.
    pub async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// RFC 3339 timestamp of now, the format every `created_at` column holds.
pub fn now_rfc3339() -> String {
    format_time(time::OffsetDateTime::now_utc())
}

/// Every timestamp fitd stores and returns: RFC 3339 in UTC with milliseconds, always the same
/// width (`2026-01-31T12:00:00.000Z`), the precision of SQLite's clock, so stored times compare as
/// strings and a time taken in SQL never sorts before one taken here.
pub fn format_time(t: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .expect("formatting a UTC time cannot fail")
}

/// A new opaque id; v7 so ids sort roughly by creation time in logs.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// One page of a list: rows after the cursor, and the cursor of the next page if there is one.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// The tables that are listed with an `after` cursor (their `seq` orders them).
#[derive(Debug, Clone, Copy)]
pub enum Listed {
    Datasets,
    Models,
    Jobs,
    SavedModels,
}

/// The `seq` after which a page starts: 0 without a cursor, `NotFound("cursor")` for an unknown id.
pub async fn cursor_seq(store: &Store, table: Listed, after: Option<&str>) -> Result<i64, Error> {
    let Some(id) = after else { return Ok(0) };
    let sql = match table {
        Listed::Datasets => "SELECT seq FROM datasets WHERE id = $1",
        Listed::Models => "SELECT seq FROM models WHERE id = $1",
        Listed::Jobs => "SELECT seq FROM jobs WHERE id = $1",
        Listed::SavedModels => "SELECT seq FROM saved_models WHERE id = $1",
    };
    sqlx::query_scalar::<_, i64>(sql)
        .bind(id)
        .fetch_optional(&store.pool)
        .await?
        .ok_or(Error::NotFound("cursor"))
}

impl<T> Page<T> {
    /// A page from up to `limit + 1` rows fetched after the cursor: the extra row only says that
    /// there is a next page, which starts after the last row kept.
    pub fn from_rows(mut items: Vec<T>, limit: i64, id: impl Fn(&T) -> &str) -> Page<T> {
        let next = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|row| id(row).to_string())
        } else {
            None
        };
        Page { items, next }
    }
}

/// Returns the pages freed by deletions to the file system (`PRAGMA incremental_vacuum`); the
/// file itself shrinks at the next WAL checkpoint. A failure only leaves the space unreclaimed.
pub async fn reclaim_space(store: &Store) {
    if store.backend == Backend::Postgres {
        // PostgreSQL's autovacuum reuses the space.
        return;
    }
    if let Err(e) = sqlx::query("PRAGMA incremental_vacuum")
        .execute(&store.pool)
        .await
    {
        tracing::warn!(error = %e, "reclaiming free pages failed");
    }
}

/// Up to five job ids, quoted, for a conflict naming the jobs that use a resource.
pub fn name_jobs(ids: &[String], total: i64) -> String {
    let shown: Vec<String> = ids.iter().take(5).map(|i| format!("{i:?}")).collect();
    let more = total - shown.len() as i64;
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// Maps constraint violations to conflicts (a row still referenced, a duplicate key); everything
/// else stays a database error.
pub fn map_sqlx(e: sqlx::Error) -> Error {
    if let sqlx::Error::Database(db) = &e {
        match db.kind() {
            sqlx::error::ErrorKind::ForeignKeyViolation => {
                return Error::Conflict("the resource is still referenced by another one".into());
            }
            sqlx::error::ErrorKind::UniqueViolation => {
                return Error::Conflict("a resource with that key already exists".into());
            }
            _ => {}
        }
    }
    Error::Sqlx(e)
}
