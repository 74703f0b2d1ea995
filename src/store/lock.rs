//! The exclusive lock a server holds on its SQLite database, so a second `fitd serve` on the same
//! file refuses to start instead of taking over the first one's running jobs.
//!
//! It is an OS file lock (`flock` on Unix) on `<db>.lock`: the kernel drops it when the process
//! exits, crash or `SIGKILL` included, so a stale lock never blocks a restart. The file itself stays
//! (deleting it would let two processes lock two different files of the same name); it holds the
//! owner's pid, for the message a second process prints.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::Error;

/// Held while the server uses the database; dropping it releases the lock.
#[derive(Debug)]
pub struct DbLock {
    file: File,
    path: PathBuf,
}

impl DbLock {
    /// Takes the lock of the database at `db_path`, failing at once with [`Error::Locked`] when
    /// another process (or another server in this process) holds it.
    pub fn acquire(db_path: &Path) -> Result<DbLock, Error> {
        let path = lock_path(db_path);
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut owner = String::new();
                let _ = file.read_to_string(&mut owner);
                return Err(Error::Locked {
                    db: db_path.to_path_buf(),
                    owner: owner.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(Error::Io(e)),
        }
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        writeln!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok(DbLock { file, path })
    }

    /// `<db>.lock`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Releases the lock now (dropping it does the same).
    pub fn release(self) {
        if let Err(e) = self.file.unlock() {
            tracing::warn!(path = %self.path.display(), error = %e, "releasing the database lock failed");
        }
    }
}

/// The lock file of a database: its path with `.lock` appended (`fitd.db` -> `fitd.db.lock`).
pub fn lock_path(db_path: &Path) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_releases() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("fitd.db");
        let first = DbLock::acquire(&db).unwrap();
        assert_eq!(first.path(), dir.path().join("fitd.db.lock"));
        match DbLock::acquire(&db) {
            Err(Error::Locked { db: locked, owner }) => {
                assert_eq!(locked, db);
                assert_eq!(owner, Some(std::process::id()));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        first.release();
        let again = DbLock::acquire(&db).unwrap();
        drop(again);
        DbLock::acquire(&db).unwrap();
    }
}
