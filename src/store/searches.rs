//! SQL for hyperparameter searches: `searches`, their trials (each a job), the ASHA decisions
//! taken at rungs, and the search's SSE event log.

use sqlx::{Any, Row, Transaction};

use super::jobs::EventRow;
use super::{Error, Page, Store, map_sqlx, now_rfc3339};

/// A stored search.
#[derive(Debug, Clone)]
pub struct SearchRow {
    pub seq: i64,
    pub id: String,
    /// `running`, `succeeded` or `cancelled`.
    pub status: String,
    /// JSON of the `CreateSearchRequest` with the seeds filled in.
    pub request: String,
    /// JSON of the base job body every trial starts from (defaults and seed filled in).
    pub base_job: String,
    /// The base model's id, name and spec (JSON) when the search was created.
    pub base_model_id: String,
    pub base_model_name: String,
    pub base_model_spec: String,
    /// Trials the search runs in all.
    pub trial_count: i64,
    pub cancel_requested: bool,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub updated_at: String,
}

const COLUMNS: &str = "seq, id, status, request, base_job, base_model_id, base_model_name, base_model_spec, \
     trial_count, cancel_requested, created_at, finished_at, updated_at";

fn from_row(r: &sqlx::any::AnyRow) -> Result<SearchRow, sqlx::Error> {
    Ok(SearchRow {
        seq: r.try_get("seq")?,
        id: r.try_get("id")?,
        status: r.try_get("status")?,
        request: r.try_get("request")?,
        base_job: r.try_get("base_job")?,
        base_model_id: r.try_get("base_model_id")?,
        base_model_name: r.try_get("base_model_name")?,
        base_model_spec: r.try_get("base_model_spec")?,
        trial_count: r.try_get("trial_count")?,
        cancel_requested: r.try_get::<i64, _>("cancel_requested")? != 0,
        created_at: r.try_get("created_at")?,
        finished_at: r.try_get("finished_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// A trial with what its job says about it.
#[derive(Debug, Clone)]
pub struct TrialRow {
    pub search_id: String,
    pub trial: i64,
    /// `None` when the trial could not be made into a job (see `error`).
    pub job_id: Option<String>,
    /// JSON object of the parameters by path.
    pub params: String,
    /// Best objective value over its epochs so far.
    pub objective: Option<f64>,
    pub objective_epoch: Option<i64>,
    /// The rung (0-based) where the search stopped it.
    pub stopped_rung: Option<i64>,
    /// Highest rung it was promoted past.
    pub promoted_rung: Option<i64>,
    /// Its end was recorded (`trial_finished` sent).
    pub finished: bool,
    pub error: Option<String>,
    pub created_at: String,
    /// From the job; `None` when the job is gone.
    pub job_status: Option<String>,
    pub job_epoch: Option<i64>,
    pub saved_model_id: Option<String>,
    pub job_error: Option<String>,
}

const TRIAL_COLUMNS: &str = "t.search_id, t.trial, t.job_id, t.params, t.objective, t.objective_epoch, \
     t.stopped_rung, t.promoted_rung, t.finished, t.error, t.created_at, j.status AS job_status, \
     j.epoch AS job_epoch, j.saved_model_id, j.error AS job_error";

fn trial_from_row(r: &sqlx::any::AnyRow) -> Result<TrialRow, sqlx::Error> {
    Ok(TrialRow {
        search_id: r.try_get("search_id")?,
        trial: r.try_get("trial")?,
        job_id: r.try_get("job_id")?,
        params: r.try_get("params")?,
        objective: r.try_get("objective")?,
        objective_epoch: r.try_get("objective_epoch")?,
        stopped_rung: r.try_get("stopped_rung")?,
        promoted_rung: r.try_get("promoted_rung")?,
        finished: r.try_get::<i64, _>("finished")? != 0,
        error: r.try_get("error")?,
        created_at: r.try_get("created_at")?,
        job_status: r.try_get("job_status")?,
        job_epoch: r.try_get("job_epoch")?,
        saved_model_id: r.try_get("saved_model_id")?,
        job_error: r.try_get("job_error")?,
    })
}

pub async fn insert(store: &Store, row: &SearchRow) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO searches (id, status, request, base_job, base_model_id, base_model_name, base_model_spec, \
         trial_count, cancel_requested, created_at, updated_at) VALUES ($1, 'running', $2, $3, $4, $5, $6, $7, 0, $8, $9)",
    )
    .bind(&row.id)
    .bind(&row.request)
    .bind(&row.base_job)
    .bind(&row.base_model_id)
    .bind(&row.base_model_name)
    .bind(&row.base_model_spec)
    .bind(row.trial_count)
    .bind(&row.created_at)
    .bind(&row.created_at)
    .execute(&store.pool)
    .await
    .map_err(map_sqlx)?;
    Ok(())
}

pub async fn get(store: &Store, id: &str) -> Result<SearchRow, Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM searches WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&store.pool)
    .await?
    .ok_or(Error::NotFound("search"))?;
    Ok(from_row(&row)?)
}

/// Searches in creation order, `limit` of them after search `after`.
pub async fn list(store: &Store, limit: i64, after: Option<&str>) -> Result<Page<SearchRow>, Error> {
    let after_seq = match after {
        None => 0,
        Some(id) => sqlx::query_scalar::<_, i64>("SELECT seq FROM searches WHERE id = $1")
            .bind(id)
            .fetch_optional(&store.pool)
            .await?
            .ok_or(Error::NotFound("cursor"))?,
    };
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM searches WHERE seq > $1 ORDER BY seq LIMIT $2"
    )))
    .bind(after_seq)
    .bind(limit + 1)
    .fetch_all(&store.pool)
    .await?;
    let items = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(Page::from_rows(items, limit, |r| &r.id))
}

/// Ids of the searches still running.
pub async fn running_ids(store: &Store) -> Result<Vec<String>, Error> {
    Ok(
        sqlx::query_scalar("SELECT id FROM searches WHERE status = 'running' ORDER BY seq")
            .fetch_all(&store.pool)
            .await?,
    )
}

/// A search's trials in trial order, with their jobs' state.
pub async fn trials(store: &Store, search_id: &str) -> Result<Vec<TrialRow>, Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {TRIAL_COLUMNS} FROM search_trials t LEFT JOIN jobs j ON j.id = t.job_id \
         WHERE t.search_id = $1 ORDER BY t.trial"
    )))
    .bind(search_id)
    .fetch_all(&store.pool)
    .await?;
    Ok(rows.iter().map(trial_from_row).collect::<Result<_, _>>()?)
}

/// The trial a job runs, if it is one.
pub async fn trial_of_job(store: &Store, job_id: &str) -> Result<Option<TrialRow>, Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {TRIAL_COLUMNS} FROM search_trials t LEFT JOIN jobs j ON j.id = t.job_id WHERE t.job_id = $1"
    )))
    .bind(job_id)
    .fetch_optional(&store.pool)
    .await?;
    Ok(row.as_ref().map(trial_from_row).transpose()?)
}

/// Adds a trial inside `tx` (with its model and job, inserted by the caller in the same
/// transaction).
pub async fn insert_trial(
    tx: &mut Transaction<'_, Any>,
    search_id: &str,
    trial: i64,
    job_id: Option<&str>,
    params: &str,
    error: Option<&str>,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO search_trials (search_id, trial, job_id, params, finished, error, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, 0, $5, $6, $7)",
    )
    .bind(search_id)
    .bind(trial)
    .bind(job_id)
    .bind(params)
    .bind(error)
    .bind(now_rfc3339())
    .bind(now_rfc3339())
    .execute(&mut **tx)
    .await
    .map_err(map_sqlx)?;
    Ok(())
}

/// Records a trial's best objective so far.
pub async fn set_objective(
    store: &Store,
    search_id: &str,
    trial: i64,
    objective: Option<f64>,
    epoch: Option<i64>,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE search_trials SET objective = $1, objective_epoch = $2, updated_at = $3 WHERE search_id = $4 AND trial = $5",
    )
    .bind(objective)
    .bind(epoch)
    .bind(now_rfc3339())
    .bind(search_id)
    .bind(trial)
    .execute(&store.pool)
    .await?;
    Ok(())
}

/// Marks a trial's end as recorded and appends its `trial_finished` event, in one transaction.
pub async fn finish_trial(
    store: &Store,
    search_id: &str,
    trial: i64,
    event_data: &str,
) -> Result<EventRow, Error> {
    let mut tx = store.pool.begin().await?;
    sqlx::query("UPDATE search_trials SET finished = 1, updated_at = $1 WHERE search_id = $2 AND trial = $3")
        .bind(now_rfc3339())
        .bind(search_id)
        .bind(trial)
        .execute(&mut *tx)
        .await?;
    let ev = append_event(&mut tx, search_id, "trial_finished", event_data).await?;
    tx.commit().await?;
    Ok(ev)
}

/// The decisions stored for a rung, oldest first: (trial, value, decision).
pub async fn rung_decisions(
    store: &Store,
    search_id: &str,
    rung: i64,
) -> Result<Vec<(i64, f64, String)>, Error> {
    let rows = sqlx::query(
        "SELECT trial, value, decision FROM search_decisions WHERE search_id = $1 AND rung = $2 ORDER BY seq",
    )
    .bind(search_id)
    .bind(rung)
    .fetch_all(&store.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("trial")?,
                r.try_get::<Option<f64>, _>("value")?.unwrap_or(f64::NAN),
                r.try_get("decision")?,
            ))
        })
        .collect()
}

/// Stores a rung decision, the trial's rung fields and its event (`trial_promoted` or
/// `trial_stopped`), in one transaction.
pub async fn record_decision(
    store: &Store,
    search_id: &str,
    trial: i64,
    rung: i64,
    value: f64,
    promote: bool,
    event_data: &str,
) -> Result<EventRow, Error> {
    let mut tx = store.pool.begin().await?;
    sqlx::query(
        "INSERT INTO search_decisions (search_id, trial, rung, value, decision, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(search_id)
    .bind(trial)
    .bind(rung)
    .bind(value.is_finite().then_some(value))
    .bind(if promote { "promote" } else { "stop" })
    .bind(now_rfc3339())
    .execute(&mut *tx)
    .await
    .map_err(map_sqlx)?;
    let column = if promote { "promoted_rung" } else { "stopped_rung" };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE search_trials SET {column} = $1, updated_at = $2 WHERE search_id = $3 AND trial = $4"
    )))
    .bind(rung)
    .bind(now_rfc3339())
    .bind(search_id)
    .bind(trial)
    .execute(&mut *tx)
    .await?;
    let event = if promote {
        "trial_promoted"
    } else {
        "trial_stopped"
    };
    let ev = append_event(&mut tx, search_id, event, event_data).await?;
    tx.commit().await?;
    Ok(ev)
}

/// Ends a search (`succeeded` or `cancelled`) with its `done` event; `None` if it had already ended.
pub async fn finish(
    store: &Store,
    id: &str,
    status: &str,
    done_data: &str,
) -> Result<Option<EventRow>, Error> {
    let mut tx = store.pool.begin().await?;
    let now = now_rfc3339();
    let done = sqlx::query(
        "UPDATE searches SET status = $1, finished_at = $2, updated_at = $3 WHERE id = $4 AND status = 'running'",
    )
    .bind(status)
    .bind(&now)
    .bind(&now)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    let ev = append_event(&mut tx, id, "done", done_data).await?;
    tx.commit().await?;
    Ok(Some(ev))
}

/// Records that a search should stop; `false` if it is not running.
pub async fn request_cancel(store: &Store, id: &str) -> Result<bool, Error> {
    let done = sqlx::query(
        "UPDATE searches SET cancel_requested = 1, updated_at = $1 WHERE id = $2 AND status = 'running'",
    )
    .bind(now_rfc3339())
    .bind(id)
    .execute(&store.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Appends an event to a search's log inside `tx`, numbering it after the last one.
pub async fn append_event(
    tx: &mut Transaction<'_, Any>,
    search_id: &str,
    event: &str,
    data: &str,
) -> Result<EventRow, Error> {
    // The counter's row lock orders concurrent writers, so no two events get the same seq.
    let seq: i64 = sqlx::query_scalar(
        "UPDATE searches SET last_event_seq = last_event_seq + 1 WHERE id = $1 RETURNING last_event_seq",
    )
    .bind(search_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(Error::NotFound("search"))?;
    sqlx::query(
        "INSERT INTO search_events (search_id, seq, event, data, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(search_id)
    .bind(seq)
    .bind(event)
    .bind(data)
    .bind(now_rfc3339())
    .execute(&mut **tx)
    .await?;
    let key = crate::jobs::search::hub_key(search_id);
    super::notify::announce(&mut *tx, &super::notify::Notice::Event { key, seq }).await?;
    Ok(EventRow {
        seq,
        event: event.to_string(),
        data: data.to_string(),
    })
}

/// Held while a process reconciles a search (records ended trials, queues the next): on
/// PostgreSQL a transaction-scoped advisory lock on the search, so the nodes of a cluster take
/// turns and never create a trial twice; dropping it rolls the empty transaction back and frees the
/// lock. On SQLite one process owns the database and its own lock suffices.
pub struct ReconcileLock(#[allow(dead_code)] Option<Transaction<'static, Any>>);

pub async fn lock_reconcile(store: &Store, search_id: &str) -> Result<ReconcileLock, Error> {
    if store.backend() != super::Backend::Postgres {
        return Ok(ReconcileLock(None));
    }
    let mut tx = store.pool.begin().await?;
    sqlx::query("SELECT 1 AS locked FROM (SELECT pg_advisory_xact_lock(hashtext($1))) AS l")
        .bind(search_id)
        .execute(&mut *tx)
        .await?;
    Ok(ReconcileLock(Some(tx)))
}

/// The seq of a search's last event (0 when none).
pub async fn last_event_seq(store: &Store, search_id: &str) -> Result<i64, Error> {
    Ok(
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM search_events WHERE search_id = $1")
            .bind(search_id)
            .fetch_one(&store.pool)
            .await?,
    )
}

/// Appends one event on its own.
pub async fn add_event(store: &Store, search_id: &str, event: &str, data: &str) -> Result<EventRow, Error> {
    let mut tx = store.pool.begin().await?;
    let ev = append_event(&mut tx, search_id, event, data).await?;
    tx.commit().await?;
    Ok(ev)
}

/// Events of a search with `seq > after`, in order.
pub async fn events_after(store: &Store, search_id: &str, after: i64) -> Result<Vec<EventRow>, Error> {
    let rows = sqlx::query(
        "SELECT seq, event, data FROM search_events WHERE search_id = $1 AND seq > $2 ORDER BY seq",
    )
    .bind(search_id)
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
