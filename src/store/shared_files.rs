//! Dataset files every node of a cluster reaches: with PostgreSQL, a dataset's `.npy` files are
//! also stored in the database (`dataset_files`, 4 MiB chunks), written in the transaction that
//! inserts the dataset's row; a node that lacks a dataset's directory fetches it from there into its
//! own data directory before reading it, streaming chunk by chunk. With SQLite the files in the
//! data directory are the only copy and nothing here runs.

use std::io::{Read, Write};
use std::path::Path;

use sqlx::{Any, Row, Transaction};

use super::{Backend, Error, Store};

/// Bytes per stored chunk.
const CHUNK: usize = 4 << 20;

/// Copies every file of the dataset directory `dir` into `dataset_files`, inside `tx`.
pub async fn upload(tx: &mut Transaction<'_, Any>, id: &str, dir: &Path) -> Result<(), Error> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        let mut file = std::fs::File::open(dir.join(&name))?;
        let mut buf = vec![0u8; CHUNK];
        let mut chunk = 0i64;
        loop {
            let n = read_full(&mut file, &mut buf)?;
            // An empty file still gets its one (empty) chunk, so it exists on every node.
            if n == 0 && chunk > 0 {
                break;
            }
            sqlx::query("INSERT INTO dataset_files (dataset_id, name, chunk, data) VALUES ($1, $2, $3, $4)")
                .bind(id)
                .bind(&name)
                .bind(chunk)
                .bind(&buf[..n])
                .execute(&mut **tx)
                .await?;
            chunk += 1;
            if n < CHUNK {
                break;
            }
        }
    }
    Ok(())
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Makes sure this node has the dataset's directory: on PostgreSQL, fetches it from
/// `dataset_files` when missing (into scratch space, then renamed into place, so readers never see
/// part of it; concurrent fetches of one dataset both succeed). `NotFound("dataset")` when the
/// database has no files for it.
pub async fn ensure_local(store: &Store, id: &str) -> Result<(), Error> {
    let target = store.dataset_dir(id);
    if store.backend() != Backend::Postgres || target.exists() {
        return Ok(());
    }
    let names: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT name FROM dataset_files WHERE dataset_id = $1 ORDER BY name")
            .bind(id)
            .fetch_all(&store.pool)
            .await?;
    if names.is_empty() {
        return Err(Error::NotFound("dataset"));
    }
    let scratch = store
        .tmp_dir()
        .join(format!("{id}.{}.fetch", uuid::Uuid::new_v4().simple()));
    let result = fetch_into(store, id, &names, &scratch).await;
    let result = result.and_then(|()| match std::fs::rename(&scratch, &target) {
        Ok(()) => Ok(()),
        // Another fetch of the same dataset finished first.
        Err(_) if target.exists() => Ok(()),
        Err(e) => Err(Error::Io(e)),
    });
    if scratch.exists() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    if result.is_ok() {
        tracing::info!(dataset = id, "fetched the dataset's files from the database");
    }
    result
}

async fn fetch_into(store: &Store, id: &str, names: &[String], dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir)?;
    for name in names {
        let mut file = std::io::BufWriter::new(std::fs::File::create(dir.join(name))?);
        let mut chunk = 0i64;
        // One chunk per query: memory stays at one chunk however large the file.
        loop {
            let row = sqlx::query(
                "SELECT data FROM dataset_files WHERE dataset_id = $1 AND name = $2 AND chunk = $3",
            )
            .bind(id)
            .bind(name)
            .bind(chunk)
            .fetch_optional(&store.pool)
            .await?;
            let Some(row) = row else { break };
            let data: Vec<u8> = row.try_get("data")?;
            file.write_all(&data)?;
            chunk += 1;
        }
        file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    Ok(())
}
