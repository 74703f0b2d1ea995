//! Announcements between the nodes of a cluster, over PostgreSQL's `NOTIFY` on one channel.
//!
//! A change is stored first; its announcement is sent inside the same transaction, which
//! PostgreSQL delivers only on commit, so a listener that hears of it always finds it stored.
//! Announcements are hints: a node that missed some (its listening connection dropped) reads the
//! tables again. On SQLite (one node) nothing is sent.

use sqlx::AnyConnection;

/// The channel every node listens on.
pub const CHANNEL: &str = "fitd";

/// What a node hears about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// An event was stored in the log with this hub key (a job id, or `search:<id>`).
    Event { key: String, seq: i64 },
    /// A job was queued: idle workers look at the queue.
    Queued,
    /// Cancelling a running job was requested.
    Cancel { job_id: String },
    /// A saved model was deleted: drop it from the model cache.
    SavedModelDeleted { id: String },
    /// A dataset was deleted: drop it from the dataset cache.
    DatasetDeleted { id: String },
}

impl Notice {
    /// The payload: a letter, then space-separated fields (ids never contain spaces).
    pub fn encode(&self) -> String {
        match self {
            Notice::Event { key, seq } => format!("e {key} {seq}"),
            Notice::Queued => "q".into(),
            Notice::Cancel { job_id } => format!("c {job_id}"),
            Notice::SavedModelDeleted { id } => format!("m {id}"),
            Notice::DatasetDeleted { id } => format!("d {id}"),
        }
    }

    pub fn decode(payload: &str) -> Option<Notice> {
        let mut parts = payload.split(' ');
        let kind = parts.next()?;
        let notice = match kind {
            "e" => Notice::Event {
                key: parts.next()?.to_string(),
                seq: parts.next()?.parse().ok()?,
            },
            "q" => Notice::Queued,
            "c" => Notice::Cancel {
                job_id: parts.next()?.to_string(),
            },
            "m" => Notice::SavedModelDeleted {
                id: parts.next()?.to_string(),
            },
            "d" => Notice::DatasetDeleted {
                id: parts.next()?.to_string(),
            },
            _ => return None,
        };
        parts.next().is_none().then_some(notice)
    }
}

/// Sends `notice` on PostgreSQL (on commit, when `conn` is in a transaction); nothing on SQLite.
pub async fn announce(conn: &mut AnyConnection, notice: &Notice) -> Result<(), sqlx::Error> {
    if conn.backend_name() != "PostgreSQL" {
        return Ok(());
    }
    // pg_notify returns `void`, which the Any driver cannot carry: select around it.
    sqlx::query("SELECT 1 AS sent FROM (SELECT pg_notify($1, $2)) AS n")
        .bind(CHANNEL)
        .bind(notice.encode())
        .execute(conn)
        .await?;
    Ok(())
}

/// [`announce`] on a connection of the pool, outside any transaction.
pub async fn announce_now(store: &super::Store, notice: &Notice) -> Result<(), sqlx::Error> {
    if store.backend() != super::Backend::Postgres {
        return Ok(());
    }
    let mut conn = store.pool.acquire().await?;
    announce(&mut conn, notice).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip_through_their_payload() {
        for n in [
            Notice::Event {
                key: "0190-abc".into(),
                seq: 42,
            },
            Notice::Event {
                key: "search:0190-abc".into(),
                seq: 1,
            },
            Notice::Queued,
            Notice::Cancel { job_id: "j".into() },
            Notice::SavedModelDeleted { id: "s".into() },
            Notice::DatasetDeleted { id: "d".into() },
        ] {
            assert_eq!(Notice::decode(&n.encode()), Some(n));
        }
        for bad in ["", "x", "e key", "e key nan", "q extra", "c"] {
            assert_eq!(Notice::decode(bad), None, "{bad:?}");
        }
    }
}
