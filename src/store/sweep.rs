//! Removes what a crash left in the data directory: everything in `tmp/` (uploads and downloads in
//! progress, `<id>.partial/` arrays not yet moved into place) and dataset directories whose row was
//! never inserted. Only safe while no other process writes there, so it runs at startup under the
//! database lock.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{Error, Store};

/// One removed file or directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub path: PathBuf,
    /// Bytes it held (files under a directory added up).
    pub bytes: u64,
}

/// Removes the leftovers and returns what went, logging each.
pub async fn sweep_leftovers(store: &Store) -> Result<Vec<Removed>, Error> {
    let ids: HashSet<String> = sqlx::query_scalar::<_, String>("SELECT id FROM datasets")
        .fetch_all(&store.pool)
        .await?
        .into_iter()
        .collect();
    let tmp = store.tmp_dir();
    let datasets = store.data_dir().join("datasets");
    let removed = tokio::task::spawn_blocking(move || -> Result<Vec<Removed>, Error> {
        let mut removed = Vec::new();
        for entry in std::fs::read_dir(&tmp)? {
            removed.push(remove(&entry?.path())?);
        }
        for entry in std::fs::read_dir(&datasets)? {
            let entry = entry?;
            let known = entry.file_name().to_str().is_some_and(|name| ids.contains(name));
            if !known {
                removed.push(remove(&entry.path())?);
            }
        }
        Ok(removed)
    })
    .await
    .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))??;
    for r in &removed {
        tracing::info!(path = %r.path.display(), bytes = r.bytes, "removed a leftover of an interrupted upload");
    }
    if !removed.is_empty() {
        tracing::info!(
            entries = removed.len(),
            bytes = removed.iter().map(|r| r.bytes).sum::<u64>(),
            "swept leftovers of interrupted uploads"
        );
    }
    Ok(removed)
}

fn remove(path: &Path) -> Result<Removed, Error> {
    let meta = std::fs::symlink_metadata(path)?;
    let bytes = if meta.is_dir() {
        dir_size(path)?
    } else {
        meta.len()
    };
    if meta.is_dir() {
        std::fs::remove_dir_all(path)?;
    } else {
        std::fs::remove_file(path)?;
    }
    Ok(Removed {
        path: path.to_path_buf(),
        bytes,
    })
}

fn dir_size(dir: &Path) -> Result<u64, Error> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = std::fs::symlink_metadata(entry.path())?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
