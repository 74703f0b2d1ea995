//! The two databases fitd runs on and the few places where their SQL differs.
//!
//! Every query is written once, with `$1`-style parameters that SQLite and PostgreSQL both take, and
//! runs through sqlx's `Any` driver. What the two dialects spell differently (the clock, JSON
//! access, timestamp comparison) comes from [`Backend`]; what only one of them needs (SQLite's
//! pragmas and incremental vacuum, PostgreSQL's row locks and `SKIP LOCKED` claims) is chosen here
//! too, so the rest of the store has one behaviour on both.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

/// Where the database is: a SQLite file (the embedded default) or a PostgreSQL server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Db {
    Sqlite(PathBuf),
    /// A `postgres://` or `postgresql://` URL.
    Postgres(String),
}

impl FromStr for Db {
    type Err = String;

    /// `postgres://...` / `postgresql://...` is PostgreSQL; `sqlite://path` or a bare path is SQLite.
    fn from_str(s: &str) -> Result<Db, String> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(Db::Postgres(s.to_string()));
        }
        let path = s.strip_prefix("sqlite://").unwrap_or(s);
        if path.is_empty() {
            return Err("the database path is empty".into());
        }
        Ok(Db::Sqlite(PathBuf::from(path)))
    }
}

impl fmt::Display for Db {
    /// The SQLite path, or the PostgreSQL URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Db::Sqlite(p) => write!(f, "{}", p.display()),
            Db::Postgres(url) => match url::Url::parse(url) {
                Ok(mut u) => {
                    if u.password().is_some() {
                        let _ = u.set_password(Some("***"));
                    }
                    write!(f, "{u}")
                }
                Err(_) => f.write_str("postgres://(unparsable URL)"),
            },
        }
    }
}

impl From<PathBuf> for Db {
    fn from(p: PathBuf) -> Db {
        Db::Sqlite(p)
    }
}

impl From<&Path> for Db {
    fn from(p: &Path) -> Db {
        Db::Sqlite(p.to_path_buf())
    }
}

impl Db {
    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// What `--db` takes to reach this database again (the password included).
    pub fn to_url(&self) -> String {
        match self {
            Db::Sqlite(p) => p.display().to_string(),
            Db::Postgres(url) => url.clone(),
        }
    }

    /// The SQLite file, when it is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Db::Sqlite(p) => Some(p),
            Db::Postgres(_) => None,
        }
    }
}

/// The SQL dialect of a [`Db`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The current time as fitd stores it (`2026-01-31T12:00:00.000Z`), read by the database.
    pub fn now(self) -> &'static str {
        match self {
            Backend::Sqlite => "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            Backend::Postgres => {
                "to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
            }
        }
    }

    /// The current time in Unix milliseconds, read by the database (one clock for every node, which
    /// is what lease expiry is judged by).
    pub fn now_ms(self) -> &'static str {
        match self {
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Backend::Postgres => "CAST(extract(epoch FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// The number at top-level key `key` of the JSON text in `column` (NULL when absent or not a
    /// number). `key` must be an identifier fitd chose, never client text.
    pub fn json_number(self, column: &str, key: &str) -> String {
        debug_assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        match self {
            Backend::Sqlite => format!("CAST(json_extract({column}, '$.{key}') AS REAL)"),
            Backend::Postgres => format!(
                "(CASE WHEN jsonb_typeof(({column})::jsonb -> '{key}') = 'number' \
                 THEN (({column})::jsonb ->> '{key}')::double precision END)"
            ),
        }
    }

    /// The text at top-level key `key` of the JSON text in `column`.
    pub fn json_text(self, column: &str, key: &str) -> String {
        debug_assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        match self {
            Backend::Sqlite => format!("json_extract({column}, '$.{key}')"),
            Backend::Postgres => format!("(({column})::jsonb ->> '{key}')"),
        }
    }

    /// The string value at the key given by parameter `key_param` of the JSON object in `column`
    /// (NULL when absent).
    pub fn json_text_at(self, column: &str, key_param: &str) -> String {
        match self {
            Backend::Sqlite => format!(
                "(SELECT t.value FROM json_each({column}) t WHERE t.key = {key_param} AND t.type = 'text')"
            ),
            Backend::Postgres => format!("(({column})::jsonb ->> ({key_param})::text)"),
        }
    }

    /// True when the RFC 3339 text in `a` is at or after (`>=`) / before (`<`) the one in `b`,
    /// compared as instants (offsets and precision may differ).
    pub fn time_cmp(self, a: &str, op: &str, b: &str) -> String {
        match self {
            Backend::Sqlite => format!("julianday({a}) {op} julianday({b})"),
            Backend::Postgres => format!("({a})::timestamptz {op} ({b})::timestamptz"),
        }
    }

    /// Appended to the subquery that picks a job to claim: on PostgreSQL the row is locked and rows
    /// other workers are claiming are skipped, so concurrent claims never wait on or take the same
    /// job; SQLite runs one writer at a time anyway.
    pub fn claim_lock(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// True when `haystack` contains `needle`, ignoring ASCII case.
    pub fn contains_ci(self, haystack: &str, needle: &str) -> String {
        match self {
            Backend::Sqlite => format!("instr(lower({haystack}), lower({needle})) > 0"),
            Backend::Postgres => format!("strpos(lower({haystack}), lower(({needle})::text)) > 0"),
        }
    }
}

/// Creates a new, empty database `<prefix>_<random>` on the PostgreSQL server that `server_url`
/// reaches, and returns it; for tests, benchmarks and tools that need a database of their own.
pub async fn create_postgres_database(server_url: &str, prefix: &str) -> Result<Db, sqlx::Error> {
    use sqlx::Connection;
    debug_assert!(prefix.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(server_url).await?;
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await?;
    conn.close().await?;
    let mut url = url::Url::parse(server_url).map_err(|e| sqlx::Error::Configuration(e.into()))?;
    url.set_path(&format!("/{name}"));
    Ok(Db::Postgres(url.to_string()))
}

/// Opens a pool on `db`; SQLite in WAL mode with foreign keys on, PostgreSQL as the URL says.
pub async fn connect(db: &Db) -> Result<AnyPool, sqlx::Error> {
    sqlx::any::install_default_drivers();
    match db {
        Db::Sqlite(path) => {
            let url = format!("sqlite://{}?mode=rwc", path.display());
            let options = AnyConnectOptions::from_str(&url)?;
            AnyPoolOptions::new()
                .max_connections(8)
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        // auto_vacuum only takes effect before the first table exists; an older
                        // database was converted by a migration.
                        conn.execute(
                            "PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL; \
                             PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000; \
                             PRAGMA foreign_keys = ON;",
                        )
                        .await?;
                        Ok(())
                    })
                })
                .connect_with(options)
                .await
        }
        Db::Postgres(url) => {
            let options = AnyConnectOptions::from_str(url)?;
            AnyPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options)
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_the_backend_and_paths_stay_sqlite() {
        assert_eq!(
            "postgres://u:p@h/db".parse::<Db>().unwrap().backend(),
            Backend::Postgres
        );
        assert_eq!(
            "postgresql://h/db".parse::<Db>().unwrap().backend(),
            Backend::Postgres
        );
        assert_eq!(
            "./fitd.db".parse::<Db>().unwrap(),
            Db::Sqlite(PathBuf::from("./fitd.db"))
        );
        assert_eq!(
            "sqlite:///var/lib/fitd.db".parse::<Db>().unwrap(),
            Db::Sqlite(PathBuf::from("/var/lib/fitd.db"))
        );
        assert!("".parse::<Db>().is_err());
    }

    #[test]
    fn the_displayed_url_hides_the_password() {
        let db: Db = "postgres://fitd:s3cret@db:5432/fitd".parse().unwrap();
        let shown = db.to_string();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("db:5432/fitd"), "{shown}");
    }
}
