//! SQL for training jobs: the queue (`jobs`), per-epoch metrics (`job_epochs`), the persisted SSE
//! event log (`job_events`) and checkpoints, each multi-row change in one transaction.

use serde::{Deserialize, Serialize};
use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use super::notify::{self, Notice};
use super::saved_models::{self, SavedModelRow};
use super::{Backend, Error, Page, Store, map_sqlx, now_rfc3339};
use crate::domain::job::{CreateJobRequest, JobStatus, Validation};
use crate::domain::labels::Tags;

/// One row of `jobs`.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub seq: i64,
    pub id: String,
    pub model_id: String,
    pub dataset_id: String,
    pub validation_dataset_id: Option<String>,
    pub status: String,
    /// JSON of the `CreateJobRequest` with the seed filled in.
    pub request: String,
    pub seed: i64,
    pub epochs: i64,
    pub epoch: Option<i64>,
    pub batches_done: i64,
    pub batches_total: Option<i64>,
    pub best_epoch: Option<i64>,
    pub stop_reason: Option<String>,
    pub error: Option<String>,
    pub saved_model_id: Option<String>,
    pub cancel_requested: bool,
    pub attempts: i64,
    /// `<node>/<n>` of the worker holding (or last holding) the claim.
    pub worker: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub updated_at: String,
    pub name: Option<String>,
    /// JSON object of string tags.
    pub tags: String,
    pub notes: Option<String>,
}

impl JobRow {
    /// A new queued job for `req` (its seed already filled in), with its run labels.
    pub fn queued(
        req: &CreateJobRequest,
        validation: &Validation,
        name: Option<String>,
        tags: &Tags,
        notes: Option<String>,
    ) -> serde_json::Result<JobRow> {
        let now = now_rfc3339();
        Ok(JobRow {
            seq: 0,
            id: super::new_id(),
            model_id: req.model_id.clone(),
            dataset_id: req.dataset_id.clone(),
            validation_dataset_id: match validation {
                Validation::Dataset(id) => Some(id.clone()),
                Validation::None | Validation::Split(_) => None,
            },
            status: JobStatus::Queued.as_str().into(),
            request: serde_json::to_string(req)?,
            seed: req.seed() as i64,
            epochs: req.fit.epochs as i64,
            epoch: None,
            batches_done: 0,
            batches_total: None,
            best_epoch: None,
            stop_reason: None,
            error: None,
            saved_model_id: None,
            cancel_requested: false,
            attempts: 0,
            worker: None,
            created_at: now.clone(),
            started_at: None,
            finished_at: None,
            updated_at: now,
            name,
            tags: serde_json::to_string(tags)?,
            notes,
        })
    }
}

/// The data of a job's `status` event.
pub fn status_event_data(status: JobStatus, epoch: Option<i64>, attempt: i64) -> String {
    serde_json::json!({"status": status.as_str(), "epoch": epoch, "attempt": attempt}).to_string()
}

const COLUMNS: &str = "seq, id, model_id, dataset_id, validation_dataset_id, status, request, seed, epochs, \
     epoch, batches_done, batches_total, best_epoch, stop_reason, error, saved_model_id, cancel_requested, \
     attempts, worker, created_at, started_at, finished_at, updated_at, name, tags, notes";

fn from_row(r: &sqlx::any::AnyRow) -> Result<JobRow, sqlx::Error> {
    Ok(JobRow {
        seq: r.try_get("seq")?,
        id: r.try_get("id")?,
        model_id: r.try_get("model_id")?,
        dataset_id: r.try_get("dataset_id")?,
        validation_dataset_id: r.try_get("validation_dataset_id")?,
        status: r.try_get("status")?,
        request: r.try_get("request")?,
        seed: r.try_get("seed")?,
        epochs: r.try_get("epochs")?,
        epoch: r.try_get("epoch")?,
        batches_done: r.try_get("batches_done")?,
        batches_total: r.try_get("batches_total")?,
        best_epoch: r.try_get("best_epoch")?,
        stop_reason: r.try_get("stop_reason")?,
        error: r.try_get("error")?,
        saved_model_id: r.try_get("saved_model_id")?,
        cancel_requested: r.try_get::<i64, _>("cancel_requested")? != 0,
        attempts: r.try_get("attempts")?,
        worker: r.try_get("worker")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        updated_at: r.try_get("updated_at")?,
        name: r.try_get("name")?,
        tags: r.try_get("tags")?,
        notes: r.try_get("notes")?,
    })
}

/// A persisted SSE event; `seq` is its SSE `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub seq: i64,
    pub event: String,
    /// JSON.
    pub data: String,
}

/// A checkpoint without its state bytes.
#[derive(Debug, Clone)]
pub struct CheckpointRow {
    pub epoch: i64,
    /// JSON of the epoch's metrics.
    pub metrics: String,
    pub is_best: bool,
    pub created_at: String,
}

/// One epoch's metrics.
#[derive(Debug, Clone)]
pub struct EpochRow {
    pub epoch: i64,
    /// JSON object.
    pub metrics: String,
    pub duration_ms: f64,
}

/// Appends an event to a job's log inside `tx`, numbering it after the job's last one.
pub async fn append_event(
    tx: &mut Transaction<'_, Any>,
    job_id: &str,
    event: &str,
    data: &str,
) -> Result<EventRow, Error> {
    // The counter's row lock orders concurrent writers, so no two events get the same seq.
    let seq: i64 = sqlx::query_scalar(
        "UPDATE jobs SET last_event_seq = last_event_seq + 1 WHERE id = $1 RETURNING last_event_seq",
    )
    .bind(job_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(Error::NotFound("job"))?;
    sqlx::query("INSERT INTO job_events (job_id, seq, event, data, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(job_id)
        .bind(seq)
        .bind(event)
        .bind(data)
        .bind(now_rfc3339())
        .execute(&mut **tx)
        .await?;
    // The webhook outbox: deliveries of a status change commit or roll back with it.
    if event == "status" {
        super::webhooks::enqueue_status(tx, job_id, data).await?;
    }
    let key = job_id.to_string();
    notify::announce(&mut *tx, &Notice::Event { key, seq }).await?;
    Ok(EventRow {
        seq,
        event: event.to_string(),
        data: data.to_string(),
    })
}

/// Inserts a queued job with its first `status` event and freezes its model's layers.
pub async fn insert(store: &Store, row: &JobRow, status_data: &str) -> Result<EventRow, Error> {
    let mut tx = store.pool.begin().await?;
    let ev = insert_in(&mut tx, row, status_data).await?;
    tx.commit().await?;
    Ok(ev)
}

/// [`insert`] inside `tx`, so a job can be queued together with the rows that refer to it.
pub async fn insert_in(
    tx: &mut Transaction<'_, Any>,
    row: &JobRow,
    status_data: &str,
) -> Result<EventRow, Error> {
    sqlx::query(
        "INSERT INTO jobs (id, model_id, dataset_id, validation_dataset_id, status, request, seed, epochs, \
         created_at, updated_at, name, tags, notes) VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&row.id)
    .bind(&row.model_id)
    .bind(&row.dataset_id)
    .bind(&row.validation_dataset_id)
    .bind(&row.request)
    .bind(row.seed)
    .bind(row.epochs)
    .bind(&row.created_at)
    .bind(&row.created_at)
    .bind(&row.name)
    .bind(&row.tags)
    .bind(&row.notes)
    .execute(&mut **tx)
    .await
    .map_err(map_sqlx)?;
    sqlx::query("UPDATE models SET locked = 1 WHERE id = $1")
        .bind(&row.model_id)
        .execute(&mut **tx)
        .await?;
    notify::announce(&mut *tx, &Notice::Queued).await?;
    append_event(tx, &row.id, "status", status_data).await
}

pub async fn get(store: &Store, id: &str) -> Result<JobRow, Error> {
    let row = sqlx::query(AssertSqlSafe(format!("SELECT {COLUMNS} FROM jobs WHERE id = $1")))
        .bind(id)
        .fetch_optional(&store.pool)
        .await?
        .ok_or(Error::NotFound("job"))?;
    Ok(from_row(&row)?)
}

/// The metrics a job list can be sorted by.
pub const SORT_METRICS: [&str; 5] = ["loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"];

/// How a job list is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// Submission order (`created_at`; `seq` breaks no ties because there are none).
    Created,
    /// A metric of the last completed epoch (one of [`SORT_METRICS`]).
    Final(&'static str),
    /// The best value of a metric over all epochs: the highest accuracy, the lowest of the others.
    Best(&'static str),
}

impl SortKey {
    /// Parses `created_at`, `final.<metric>` or `best.<metric>`.
    pub fn parse(s: &str) -> Option<SortKey> {
        if s == "created_at" {
            return Some(SortKey::Created);
        }
        let (kind, metric) = s.split_once('.')?;
        let metric = *SORT_METRICS.iter().find(|m| **m == metric)?;
        match kind {
            "final" => Some(SortKey::Final(metric)),
            "best" => Some(SortKey::Best(metric)),
            _ => None,
        }
    }

    pub fn as_string(self) -> String {
        match self {
            SortKey::Created => "created_at".into(),
            SortKey::Final(m) => format!("final.{m}"),
            SortKey::Best(m) => format!("best.{m}"),
        }
    }

    /// The SQL computing the key of a `jobs` row; `metric` comes from [`SORT_METRICS`], never from
    /// a client's text.
    fn sql(self, backend: Backend) -> String {
        match self {
            SortKey::Created => "seq".into(),
            SortKey::Final(m) => format!(
                "(SELECT {v} FROM job_epochs e WHERE e.job_id = jobs.id ORDER BY e.epoch DESC LIMIT 1)",
                v = backend.json_number("e.metrics", m)
            ),
            SortKey::Best(m) => {
                let agg = if m.ends_with("accuracy") { "MAX" } else { "MIN" };
                format!(
                    "(SELECT {agg}({v}) FROM job_epochs e WHERE e.job_id = jobs.id)",
                    v = backend.json_number("e.metrics", m)
                )
            }
        }
    }
}

/// What a job list keeps; every filter given must match.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub status: Option<String>,
    pub model_id: Option<String>,
    pub dataset_id: Option<String>,
    /// Jobs whose name contains this text, ignoring ASCII case.
    pub name: Option<String>,
    /// `(key, Some(value))`: the tag has this value; `(key, None)`: the job has the tag.
    pub tags: Vec<(String, Option<String>)>,
    /// RFC 3339; jobs created at or after it.
    pub created_after: Option<String>,
    /// RFC 3339; jobs created strictly before it.
    pub created_before: Option<String>,
}

/// Where a sorted list resumes: the sort key and `seq` of the last job of the previous page, so the
/// next page starts right after it however many jobs share its key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct MetricCursor {
    /// The order it belongs to (`best.val_accuracy desc`).
    o: String,
    v: Option<f64>,
    s: i64,
}

enum Bind {
    Text(String),
    Int(i64),
    Real(f64),
}

/// A page of jobs matching `filter`, ordered by `sort` (`descending` or not; jobs without the
/// metric last either way), `limit` of them after the cursor `after`. With [`SortKey::Created`]
/// the cursor is the id of the last job of the previous page; otherwise it is an opaque token
/// holding that job's sort key and `seq`. `NotFound("cursor")` when it is neither.
pub async fn list(
    store: &Store,
    filter: &JobFilter,
    sort: SortKey,
    descending: bool,
    limit: i64,
    after: Option<&str>,
) -> Result<Page<JobRow>, Error> {
    let order = format!("{} {}", sort.as_string(), if descending { "desc" } else { "asc" });
    let backend = store.backend();
    let mut wheres = Vec::new();
    let mut binds = Vec::new();
    // The next parameter's placeholder, `$1`, `$2`, ... in the order of `binds`.
    let mut bind = |b: Bind| {
        binds.push(b);
        format!("${}", binds.len())
    };
    if let Some(v) = &filter.status {
        wheres.push(format!("status = {}", bind(Bind::Text(v.clone()))));
    }
    if let Some(v) = &filter.model_id {
        wheres.push(format!("model_id = {}", bind(Bind::Text(v.clone()))));
    }
    if let Some(v) = &filter.dataset_id {
        wheres.push(format!("dataset_id = {}", bind(Bind::Text(v.clone()))));
    }
    if let Some(v) = &filter.name {
        wheres.push(backend.contains_ci("name", &bind(Bind::Text(v.clone()))));
    }
    for (k, v) in &filter.tags {
        let value = backend.json_text_at("jobs.tags", &bind(Bind::Text(k.clone())));
        match v {
            Some(v) => wheres.push(format!("{value} = {}", bind(Bind::Text(v.clone())))),
            None => wheres.push(format!("{value} IS NOT NULL")),
        }
    }
    if let Some(v) = &filter.created_after {
        wheres.push(backend.time_cmp("created_at", ">=", &bind(Bind::Text(v.clone()))));
    }
    if let Some(v) = &filter.created_before {
        wheres.push(backend.time_cmp("created_at", "<", &bind(Bind::Text(v.clone()))));
    }
    let (lt, dir) = if descending { ("<", "DESC") } else { (">", "ASC") };
    let mut cursor_where = "1 = 1".to_string();
    if let Some(after) = after {
        if sort == SortKey::Created {
            let seq = super::cursor_seq(store, super::Listed::Jobs, Some(after)).await?;
            cursor_where = format!("sort_key {lt} {}", bind(Bind::Int(seq)));
        } else {
            let c: MetricCursor = hex::decode(after)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .filter(|c: &MetricCursor| c.o == order)
                .ok_or(Error::NotFound("cursor"))?;
            match c.v {
                Some(v) => {
                    let (a, b, s) = (bind(Bind::Real(v)), bind(Bind::Real(v)), bind(Bind::Int(c.s)));
                    cursor_where = format!(
                        "(sort_key IS NOT NULL AND (sort_key {lt} {a} OR (sort_key = {b} AND seq {lt} {s}))) \
                         OR sort_key IS NULL"
                    );
                }
                None => {
                    cursor_where = format!("sort_key IS NULL AND seq {lt} {}", bind(Bind::Int(c.s)));
                }
            }
        }
    }
    let limit_param = bind(Bind::Int(limit + 1));
    let filter_sql = if wheres.is_empty() {
        "1 = 1".to_string()
    } else {
        wheres.join(" AND ")
    };
    let sql = format!(
        "SELECT * FROM (SELECT {COLUMNS}, {key} AS sort_key FROM jobs WHERE {filter_sql}) AS listed \
         WHERE {cursor_where} ORDER BY sort_key IS NULL, sort_key {dir}, seq {dir} LIMIT {limit_param}",
        key = sort.sql(backend)
    );
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for b in binds {
        q = match b {
            Bind::Text(t) => q.bind(t),
            Bind::Int(i) => q.bind(i),
            Bind::Real(r) => q.bind(r),
        };
    }
    let rows = q.fetch_all(&store.pool).await?;
    let mut items = Vec::with_capacity(rows.len());
    let mut keys = Vec::with_capacity(rows.len());
    for r in &rows {
        items.push(from_row(r)?);
        keys.push(if sort == SortKey::Created {
            None
        } else {
            r.try_get::<Option<f64>, _>("sort_key")?
        });
    }
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next = match items.last() {
        Some(last) if more => Some(if sort == SortKey::Created {
            last.id.clone()
        } else {
            let c = MetricCursor {
                o: order,
                v: keys[items.len() - 1],
                s: last.seq,
            };
            hex::encode(serde_json::to_vec(&c).map_err(|e| Error::Corrupt(e.to_string()))?)
        }),
        _ => None,
    };
    Ok(Page { items, next })
}

/// A job's name, tags (JSON) and notes.
#[derive(Debug, Clone, PartialEq)]
pub struct Labels {
    pub name: Option<String>,
    pub tags: String,
    pub notes: Option<String>,
}

/// Replaces a job's labels if they still are `old`; `false` when another change came first (the
/// caller reads again and reapplies its patch), `NotFound` when the job is gone.
pub async fn set_labels(store: &Store, id: &str, old: &Labels, new: &Labels) -> Result<bool, Error> {
    let done = sqlx::query(
        "UPDATE jobs SET name = $1, tags = $2, notes = $3, updated_at = $4 \
         WHERE id = $5 AND name IS NOT DISTINCT FROM $6 AND tags = $7 AND notes IS NOT DISTINCT FROM $8",
    )
    .bind(&new.name)
    .bind(&new.tags)
    .bind(&new.notes)
    .bind(now_rfc3339())
    .bind(id)
    .bind(&old.name)
    .bind(&old.tags)
    .bind(&old.notes)
    .execute(&store.pool)
    .await?;
    if done.rows_affected() == 1 {
        return Ok(true);
    }
    get(store, id).await?;
    Ok(false)
}

/// Who claims a job, and for how long the claim holds unless renewed.
#[derive(Debug, Clone, Copy)]
pub struct Claimant<'a> {
    /// `<node>/<worker>`, recorded on the job while it runs.
    pub worker: &'a str,
    pub lease_ms: i64,
}

/// Atomically takes the oldest job that is queued, or running under a lease that expired (its
/// worker died, froze or lost the database), and marks it running under a new claim: `attempts`
/// goes up by one and is the claim's fencing token, which every later write for the job must name.
/// `None` when there is nothing to take. Also logs its `status` event.
///
/// One statement on both databases; on PostgreSQL its subquery locks the row with
/// `FOR UPDATE SKIP LOCKED`, so workers on any number of nodes never take the same job twice.
pub async fn claim_next(
    store: &Store,
    claimant: Claimant<'_>,
    status_data: impl Fn(&JobRow) -> String,
) -> Result<Option<(JobRow, EventRow)>, Error> {
    let b = store.backend();
    let (now, now_ms) = (b.now(), b.now_ms());
    let claimable = format!("(status = 'queued' OR (status = 'running' AND lease_until_ms < {now_ms}))");
    // The clock is read inside the statement, so start times follow the claim order exactly.
    let row = sqlx::query(AssertSqlSafe(format!(
        "UPDATE jobs SET status = 'running', worker = $1, lease_until_ms = {now_ms} + $2, \
         started_at = COALESCE(started_at, CASE WHEN created_at > {now} THEN created_at ELSE {now} END), \
         updated_at = {now}, attempts = attempts + 1 \
         WHERE id = (SELECT id FROM jobs WHERE {claimable} ORDER BY seq LIMIT 1{lock}) AND {claimable} \
         RETURNING {COLUMNS}",
        lock = b.claim_lock(),
    )))
    .bind(claimant.worker)
    .bind(claimant.lease_ms)
    .fetch_optional(&store.pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let job = from_row(&row)?;
    let mut tx = store.pool.begin().await?;
    let ev = append_event(&mut tx, &job.id, "status", &status_data(&job)).await?;
    tx.commit().await?;
    Ok(Some((job, ev)))
}

/// Extends the lease of the claim `attempt` on a running job. `Ok(Some(cancel_requested))` while
/// the claim holds; `Ok(None)` when it does not any more (the job was taken over, or ended).
pub async fn renew_lease(
    store: &Store,
    id: &str,
    attempt: i64,
    lease_ms: i64,
) -> Result<Option<bool>, Error> {
    let cancel: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "UPDATE jobs SET lease_until_ms = {} + $1 WHERE id = $2 AND attempts = $3 AND status = 'running' \
         RETURNING cancel_requested",
        store.backend().now_ms()
    )))
    .bind(lease_ms)
    .bind(id)
    .bind(attempt)
    .fetch_optional(&store.pool)
    .await?;
    Ok(cancel.map(|c| c != 0))
}

/// Puts every `running` job back in the queue (a single node's restart after a crash); they keep
/// their seq, so they run first. Returns their ids.
pub async fn requeue_running(store: &Store) -> Result<Vec<String>, Error> {
    let ids = sqlx::query_scalar::<_, String>(
        "UPDATE jobs SET status = 'queued', lease_until_ms = NULL, updated_at = $1 \
         WHERE status = 'running' RETURNING id",
    )
    .bind(now_rfc3339())
    .fetch_all(&store.pool)
    .await?;
    Ok(ids)
}

/// Puts one running job back in the queue (its worker's node shuts down), logging a `status`
/// event; `None` when the claim `attempt` is no longer current.
pub async fn requeue(
    store: &Store,
    id: &str,
    attempt: i64,
    status_data: &str,
) -> Result<Option<EventRow>, Error> {
    let mut tx = store.pool.begin().await?;
    let done = sqlx::query(
        "UPDATE jobs SET status = 'queued', lease_until_ms = NULL, updated_at = $1 \
         WHERE id = $2 AND status = 'running' AND attempts = $3",
    )
    .bind(now_rfc3339())
    .bind(id)
    .bind(attempt)
    .execute(&mut *tx)
    .await?;
    let ev = if done.rows_affected() == 1 {
        Some(append_event(&mut tx, id, "status", status_data).await?)
    } else {
        None
    };
    tx.commit().await?;
    Ok(ev)
}

/// Cancels a job that is still queued; returns its events (`status`, `done`) or `None` if it was
/// not queued any more.
pub async fn cancel_queued(
    store: &Store,
    id: &str,
    status_data: &str,
    done_data: &str,
) -> Result<Option<Vec<EventRow>>, Error> {
    let mut tx = store.pool.begin().await?;
    let now = now_rfc3339();
    let done = sqlx::query(
        "UPDATE jobs SET status = 'cancelled', stop_reason = 'cancelled', cancel_requested = 1, \
         finished_at = CASE WHEN created_at > $1 THEN created_at ELSE $1 END, updated_at = $2 WHERE id = $3 AND status = 'queued'",
    )
    .bind(&now)
    .bind(&now)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    let a = append_event(&mut tx, id, "status", status_data).await?;
    let b = append_event(&mut tx, id, "done", done_data).await?;
    tx.commit().await?;
    Ok(Some(vec![a, b]))
}

/// Records that a running job should stop; `false` if it is not running.
pub async fn request_cancel(store: &Store, id: &str) -> Result<bool, Error> {
    let done = sqlx::query(
        "UPDATE jobs SET cancel_requested = 1, updated_at = $1 WHERE id = $2 AND status = 'running'",
    )
    .bind(now_rfc3339())
    .bind(id)
    .execute(&store.pool)
    .await?;
    let running = done.rows_affected() == 1;
    if running {
        // The worker's next lease renewal sees the request too; this only makes it sooner.
        notify::announce_now(
            store,
            &Notice::Cancel {
                job_id: id.to_string(),
            },
        )
        .await?;
    }
    Ok(running)
}

/// Events of a job with `seq > after`, in order.
pub async fn events_after(store: &Store, job_id: &str, after: i64) -> Result<Vec<EventRow>, Error> {
    let rows =
        sqlx::query("SELECT seq, event, data FROM job_events WHERE job_id = $1 AND seq > $2 ORDER BY seq")
            .bind(job_id)
            .bind(after)
            .fetch_all(&store.pool)
            .await?;
    rows.iter()
        .map(|r| {
            Ok(EventRow {
                seq: r.try_get("seq")?,
                event: r.try_get("event")?,
                data: r.try_get("data")?,
            })
        })
        .collect()
}

/// The seq of a job's last event (0 when none).
pub async fn last_event_seq(store: &Store, job_id: &str) -> Result<i64, Error> {
    Ok(
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM job_events WHERE job_id = $1")
            .bind(job_id)
            .fetch_one(&store.pool)
            .await?,
    )
}

/// Everything one completed epoch writes.
#[derive(Debug, Clone)]
pub struct EpochRecord<'a> {
    pub job_id: &'a str,
    /// The writer's claim (see [`claim_next`]); the epoch is refused when it is not current.
    pub attempt: i64,
    pub epoch: i64,
    /// JSON object of the metrics.
    pub metrics: &'a str,
    pub duration_ms: f64,
    /// JSON of the `epoch` event.
    pub epoch_event: &'a str,
    /// `Trainer::save_state` bytes.
    pub state: &'a [u8],
    /// The checkpoint retention decision: which stored epoch is the best, which to delete.
    pub best_epoch: Option<i64>,
    pub delete: &'a [i64],
    /// JSON of the `checkpoint` event.
    pub checkpoint_event: &'a str,
    pub batches_total: i64,
    /// Best epoch as the job view reports it.
    pub job_best_epoch: Option<i64>,
}

/// Stores an epoch in one transaction: metrics row, `epoch` event, checkpoint with retention, job
/// progress, `checkpoint` event. Returns the two events to broadcast.
pub async fn record_epoch(store: &Store, r: &EpochRecord<'_>) -> Result<Vec<EventRow>, Error> {
    let now = now_rfc3339();
    let mut tx = store.pool.begin().await?;
    // First, and fenced: only the current claim may write, and on PostgreSQL the row stays locked
    // until commit, so no other worker can take the job over in between.
    let fenced = sqlx::query(
        "UPDATE jobs SET epoch = $1, best_epoch = $2, batches_done = $3, batches_total = $4, updated_at = $5 \
         WHERE id = $6 AND status = 'running' AND attempts = $7",
    )
    .bind(r.epoch)
    .bind(r.job_best_epoch)
    .bind(r.batches_total)
    .bind(r.batches_total)
    .bind(&now)
    .bind(r.job_id)
    .bind(r.attempt)
    .execute(&mut *tx)
    .await?;
    if fenced.rows_affected() == 0 {
        return Err(Error::StaleClaim(r.job_id.to_string()));
    }
    sqlx::query(
        "INSERT INTO job_epochs (job_id, epoch, metrics, duration_ms, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(r.job_id)
    .bind(r.epoch)
    .bind(r.metrics)
    .bind(r.duration_ms)
    .bind(&now)
    .execute(&mut *tx)
    .await
    .map_err(map_sqlx)?;
    let epoch_ev = append_event(&mut tx, r.job_id, "epoch", r.epoch_event).await?;
    sqlx::query("INSERT INTO checkpoints (job_id, epoch, state, metrics, is_best, created_at) VALUES ($1, $2, $3, $4, 0, $5)")
        .bind(r.job_id)
        .bind(r.epoch)
        .bind(r.state)
        .bind(r.metrics)
        .bind(&now)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    for e in r.delete {
        sqlx::query("DELETE FROM checkpoints WHERE job_id = $1 AND epoch = $2")
            .bind(r.job_id)
            .bind(e)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("UPDATE checkpoints SET is_best = CASE WHEN epoch = $1 THEN 1 ELSE 0 END WHERE job_id = $2")
        .bind(r.best_epoch)
        .bind(r.job_id)
        .execute(&mut *tx)
        .await?;
    let ckpt_ev = append_event(&mut tx, r.job_id, "checkpoint", r.checkpoint_event).await?;
    tx.commit().await?;
    Ok(vec![epoch_ev, ckpt_ev])
}

/// The newest checkpoint of a job: its epoch and state bytes.
pub async fn latest_checkpoint(store: &Store, job_id: &str) -> Result<Option<(i64, Vec<u8>)>, Error> {
    let row =
        sqlx::query("SELECT epoch, state FROM checkpoints WHERE job_id = $1 ORDER BY epoch DESC LIMIT 1")
            .bind(job_id)
            .fetch_optional(&store.pool)
            .await?;
    Ok(match row {
        Some(r) => Some((r.try_get("epoch")?, r.try_get("state")?)),
        None => None,
    })
}

/// A job's stored checkpoints, oldest first, without their state bytes.
pub async fn list_checkpoints(store: &Store, job_id: &str) -> Result<Vec<CheckpointRow>, Error> {
    let rows = sqlx::query(
        "SELECT epoch, metrics, is_best, created_at FROM checkpoints WHERE job_id = $1 ORDER BY epoch",
    )
    .bind(job_id)
    .fetch_all(&store.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(CheckpointRow {
                epoch: r.try_get("epoch")?,
                metrics: r.try_get("metrics")?,
                is_best: r.try_get::<i64, _>("is_best")? != 0,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}

/// Metrics of epochs `> since` (all with `since = -1`), in order.
pub async fn epochs_since(store: &Store, job_id: &str, since: i64) -> Result<Vec<EpochRow>, Error> {
    let rows = sqlx::query(
        "SELECT epoch, metrics, duration_ms FROM job_epochs WHERE job_id = $1 AND epoch > $2 ORDER BY epoch",
    )
    .bind(job_id)
    .bind(since)
    .fetch_all(&store.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(EpochRow {
                epoch: r.try_get("epoch")?,
                metrics: r.try_get("metrics")?,
                duration_ms: r.try_get("duration_ms")?,
            })
        })
        .collect()
}

/// How a run ended, for [`finish`].
#[derive(Debug, Clone)]
pub struct Finish<'a> {
    pub job_id: &'a str,
    /// The writer's claim; a job another worker took over is left alone.
    pub attempt: i64,
    pub status: &'a str,
    pub stop_reason: &'a str,
    pub error: Option<&'a str>,
    pub best_epoch: Option<i64>,
    /// The saved model a succeeded job creates.
    pub saved_model: Option<&'a SavedModelRow>,
    pub status_event: &'a str,
    pub done_event: &'a str,
}

/// Ends a running job in one transaction (its saved model, final fields, `status` and `done`
/// events); returns the events, or `None` if the job was not running.
pub async fn finish(store: &Store, f: &Finish<'_>) -> Result<Option<Vec<EventRow>>, Error> {
    let now = now_rfc3339();
    let mut tx = store.pool.begin().await?;
    let done = sqlx::query(
        "UPDATE jobs SET status = $1, stop_reason = $2, error = $3, best_epoch = COALESCE($4, best_epoch), \
         saved_model_id = $5, finished_at = CASE WHEN COALESCE(started_at, created_at) > $6 \
         THEN COALESCE(started_at, created_at) ELSE $6 END, updated_at = $7, lease_until_ms = NULL \
         WHERE id = $8 AND status = 'running' AND attempts = $9",
    )
    .bind(f.status)
    .bind(f.stop_reason)
    .bind(f.error)
    .bind(f.best_epoch)
    .bind(f.saved_model.map(|s| s.id.as_str()))
    .bind(&now)
    .bind(&now)
    .bind(f.job_id)
    .bind(f.attempt)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    if let Some(sm) = f.saved_model {
        saved_models::insert_with(&mut *tx, sm).await?;
    }
    let a = append_event(&mut tx, f.job_id, "status", f.status_event).await?;
    let b = append_event(&mut tx, f.job_id, "done", f.done_event).await?;
    tx.commit().await?;
    Ok(Some(vec![a, b]))
}

/// What deleting a job removed besides its rows.
#[derive(Debug, Default)]
pub struct Deleted {
    /// Saved models deleted with it (asked for), to drop from the model cache.
    pub saved_models: Vec<String>,
}

/// Deletes a finished job with its epochs, events and checkpoints (foreign keys cascade), and with
/// `with_saved_models` the saved models made from it, in one transaction; then returns the freed
/// pages to the file system. `Conflict` for a queued or running job, or a saved model an alias
/// names or a queued or running job starts from.
pub async fn delete(store: &Store, id: &str, with_saved_models: bool) -> Result<Deleted, Error> {
    let mut tx = store.pool.begin().await?;
    // The first statement writes, so the transaction holds the write lock from the start.
    let done =
        sqlx::query("DELETE FROM jobs WHERE id = $1 AND status IN ('succeeded', 'failed', 'cancelled')")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    if done.rows_affected() == 0 {
        drop(tx);
        let row = get(store, id).await?;
        return Err(Error::Conflict(format!(
            "job {id:?} is {}; cancel it and delete it once it has stopped",
            row.status
        )));
    }
    let mut deleted = Deleted::default();
    if with_saved_models {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM saved_models WHERE job_id = $1 ORDER BY seq")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
        for sm in &ids {
            saved_models::check_unused(&mut tx, store.backend(), sm).await?;
        }
        sqlx::query("DELETE FROM saved_models WHERE job_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        for sm in &ids {
            notify::announce(&mut tx, &Notice::SavedModelDeleted { id: sm.clone() }).await?;
        }
        deleted.saved_models = ids;
    }
    tx.commit().await?;
    super::reclaim_space(store).await;
    Ok(deleted)
}

/// How many jobs have each status; every status is listed, with 0 when none has it.
pub async fn count_by_status(store: &Store) -> Result<Vec<(&'static str, i64)>, Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        .fetch_all(&store.pool)
        .await?;
    Ok(["queued", "running", "succeeded", "failed", "cancelled"]
        .into_iter()
        .map(|s| (s, rows.iter().find(|(r, _)| r == s).map_or(0, |(_, n)| *n)))
        .collect())
}
