//! The per-job event hub: one tokio broadcast channel per job while it has live subscribers, fed
//! after each event is stored (progress events are live only). Subscribers never depend on it
//! alone: they read stored events from SQLite first and backfill from there on any gap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::store::jobs::EventRow;

/// Events a slow subscriber may fall behind before it sees `Lagged` and backfills from SQLite.
const CAPACITY: usize = 256;

/// One event as subscribers receive it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    /// The SSE id: the event's seq when persisted; for a progress event, the seq of the last
    /// persisted event, so a client reconnecting with it misses nothing.
    pub seq: i64,
    pub event: Arc<str>,
    /// JSON.
    pub data: Arc<str>,
    /// Stored in `job_events` (everything but `progress`).
    pub persisted: bool,
}

impl From<&EventRow> for JobEvent {
    fn from(e: &EventRow) -> Self {
        JobEvent {
            seq: e.seq,
            event: e.event.as_str().into(),
            data: e.data.as_str().into(),
            persisted: true,
        }
    }
}

/// Broadcast channels by job id.
#[derive(Debug, Default)]
pub struct EventHub {
    channels: Mutex<HashMap<String, broadcast::Sender<JobEvent>>>,
}

impl EventHub {
    /// A receiver of the job's events from now on.
    pub fn subscribe(&self, job_id: &str) -> broadcast::Receiver<JobEvent> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(job_id.to_string())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe()
    }

    /// Sends to the current subscribers, if any.
    pub fn publish(&self, job_id: &str, event: JobEvent) {
        if let Some(tx) = self.existing(job_id) {
            let _ = tx.send(event);
        }
    }

    /// Sends stored events, in order, to the current subscribers, if any.
    pub fn publish_rows(&self, job_id: &str, rows: &[EventRow]) {
        if let Some(tx) = self.existing(job_id) {
            for r in rows {
                let _ = tx.send(JobEvent::from(r));
            }
        }
    }

    fn existing(&self, job_id: &str) -> Option<broadcast::Sender<JobEvent>> {
        let map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        map.get(job_id).cloned()
    }

    /// Drops the job's channel once its last subscriber has gone, so channels live only while
    /// someone listens (a subscriber that comes later creates a new one).
    pub fn release(&self, job_id: &str) {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(job_id).is_some_and(|tx| tx.receiver_count() == 0) {
            map.remove(job_id);
        }
    }

    /// Drops a finished job's channel; its subscribers see `Closed` after the last event and finish
    /// from SQLite.
    pub fn close(&self, job_id: &str) {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(job_id);
    }

    /// The logs that have live subscribers.
    pub fn keys(&self) -> Vec<String> {
        let map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .filter(|(_, tx)| tx.receiver_count() > 0)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Number of live subscribers of a job (for tests and metrics).
    pub fn subscribers(&self, job_id: &str) -> usize {
        let map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        map.get(job_id).map_or(0, |s| s.receiver_count())
    }
}
