//! A cluster node's ear: `LISTEN`s for the announcements other nodes make (see
//! [`crate::store::notify`]) and acts on them here, so a client of this node sees live the events
//! of a job training on another, a cancel reaches the worker wherever it runs, idle workers wake
//! when a job is queued anywhere, and caches drop what was deleted elsewhere.
//!
//! Events are read from the table, never taken from the announcement, and a stream that sees a
//! gap backfills from the table; when the listening connection drops, every followed log is read
//! again once it is back, so nothing is lost or repeated across reconnects.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use super::{EventHub, JobEvent, Jobs};
use crate::store::notify::{CHANNEL, Notice};
use crate::store::{self, Store};

/// What the relay acts on besides the event hub.
#[derive(Clone)]
pub struct Relay {
    pub store: Store,
    pub jobs: Jobs,
    /// Dropped from when a saved model is deleted on another node.
    pub models: Option<Arc<crate::serving::cache::ModelCache>>,
}

/// Listens on `url` until `stop` is cancelled; reconnects with a short backoff when the
/// connection or the database goes away.
pub fn spawn(url: String, relay: Relay, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            let listener = tokio::select! {
                _ = stop.cancelled() => return,
                l = connect(&url) => l,
            };
            match listener {
                Ok(listener) => {
                    backoff = Duration::from_millis(200);
                    tracing::info!("listening for cluster announcements");
                    // Whatever was announced while nobody listened is read from the tables.
                    relay.catch_up().await;
                    listen(listener, &relay, &stop).await;
                    if stop.is_cancelled() {
                        return;
                    }
                    tracing::warn!("the announcement connection dropped; reconnecting");
                }
                Err(e) => tracing::warn!(error = %e, "listening for cluster announcements failed"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    });
}

async fn connect(url: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.ignore_pool_close_event(true);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Handles notifications until the connection drops (`try_recv` gives `None`) or `stop`.
async fn listen(mut listener: PgListener, relay: &Relay, stop: &CancellationToken) {
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.try_recv() => r,
        };
        match received {
            Ok(Some(n)) => match Notice::decode(n.payload()) {
                Some(notice) => relay.handle(notice).await,
                None => tracing::warn!(payload = n.payload(), "an announcement was not understood"),
            },
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "receiving announcements failed");
                return;
            }
        }
    }
}

impl Relay {
    fn hub(&self) -> &EventHub {
        self.jobs.hub()
    }

    async fn handle(&self, notice: Notice) {
        match notice {
            Notice::Event { key, seq } => {
                if self.hub().subscribers(&key) > 0 {
                    self.forward(&key, seq - 1).await;
                }
            }
            Notice::Queued => self.jobs.notify_queued(),
            Notice::Cancel { job_id } => self.jobs.stop_running(&job_id),
            Notice::SavedModelDeleted { id } => {
                if let Some(models) = &self.models {
                    models.remove(&id);
                }
            }
            Notice::DatasetDeleted { id } => {
                self.store.dataset_cache().invalidate(&id);
                // This node's copy of the files goes too (the deleting node removed its own).
                let dir = self.store.dataset_dir(&id);
                let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
            }
        }
    }

    /// Publishes the stored events of a log after `after` to this node's subscribers; those that
    /// already have them skip them by seq.
    async fn forward(&self, key: &str, after: i64) {
        let rows = match key.strip_prefix("search:") {
            Some(search) => store::searches::events_after(&self.store, search, after).await,
            None => store::jobs::events_after(&self.store, key, after).await,
        };
        match rows {
            Ok(rows) => {
                for r in &rows {
                    self.hub().publish(key, JobEvent::from(r));
                }
            }
            Err(e) => tracing::warn!(log = key, error = %e, "reading announced events failed"),
        }
    }

    /// After a reconnect: the newest event of every followed log, which makes any subscriber that
    /// missed something backfill from the table; and a look at the queue.
    async fn catch_up(&self) {
        for key in self.hub().keys() {
            let last = match key.strip_prefix("search:") {
                Some(search) => store::searches::last_event_seq(&self.store, search).await,
                None => store::jobs::last_event_seq(&self.store, &key).await,
            };
            if let Ok(last) = last
                && last > 0
            {
                self.forward(&key, last - 1).await;
            }
        }
        self.jobs.notify_queued();
    }
}
