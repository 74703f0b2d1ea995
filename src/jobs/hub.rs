//! The per-job event hub: one tokio broadcast channel per job with live subscribers, fed by the
//! worker after each event is stored (progress events are live only).

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
    fn sender(&self, job_id: &str) -> broadcast::Sender<JobEvent> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(job_id.to_string())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .clone()
    }

    /// A receiver of the job's events from now on.
    pub fn subscribe(&self, job_id: &str) -> broadcast::Receiver<JobEvent> {
        self.sender(job_id).subscribe()
    }

    /// Sends to the current subscribers (none is fine).
    pub fn publish(&self, job_id: &str, event: JobEvent) {
        let _ = self.sender(job_id).send(event);
    }

    /// Sends stored events, in order.
    pub fn publish_rows(&self, job_id: &str, rows: &[EventRow]) {
        let tx = self.sender(job_id);
        for r in rows {
            let _ = tx.send(JobEvent::from(r));
        }
    }

    /// Drops a finished job's channel; its subscribers see `Closed` after the last event and finish
    /// from SQLite.
    pub fn close(&self, job_id: &str) {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(job_id);
    }

    /// Number of live subscribers of a job (for tests and metrics).
    pub fn subscribers(&self, job_id: &str) -> usize {
        let map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        map.get(job_id).map_or(0, |s| s.receiver_count())
    }
}
