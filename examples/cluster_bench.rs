//! Measures fitd as a cluster on PostgreSQL against the single node on SQLite, in one run:
//!
//! 1. Job claims per second: `jobs` tiny jobs (digits, one dense layer, one epoch) run by 8 worker
//!    threads, as two worker nodes of 4 on PostgreSQL (plus an API node with none) and as one
//!    SQLite node with 8; from the first submission to the last job finished.
//! 2. Event latency across nodes: a job of `epochs` short epochs trains on a worker node while a
//!    client follows its event stream on the API node; for each `epoch` event, the time from the
//!    event's commit (its stored `created_at`) to its arrival at the client: p50 and p99.
//!
//! The nodes are full `Application`s in this process, each with its own pool, event hub, data
//! directory and `LISTEN` connection: they share nothing but the database, as separate processes
//! would.
//!
//! Usage: `FITD_BENCH_POSTGRES=postgres://postgres:fitd@127.0.0.1/postgres \
//!         cargo run --release --example cluster_bench -- [jobs] [epochs]` (default 200 and 200).

use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use fitd::config::Config;
use fitd::startup::Application;
use fitd::store::Db;
use futures_util::StreamExt;
use serde_json::{Value, json};
use sqlx::Connection;

/// Starts a node on `db`: an API node (`worker == false`) or a worker node; returns its base URL.
async fn node(
    db: &Db,
    dir: &std::path::Path,
    name: &str,
    workers: usize,
    worker: bool,
) -> anyhow::Result<String> {
    let mut config = Config::for_tests(db.clone());
    config.workers = workers;
    config.node_name = Some(name.into());
    config.data_dir = match db {
        Db::Postgres(_) => Some(dir.join(name)),
        Db::Sqlite(_) => None,
    };
    let app = if worker {
        Application::build_worker(config).await?
    } else {
        Application::build(config).await?
    };
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until(std::future::pending()));
    Ok(base)
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> anyhow::Result<Value> {
    let res = client.post(url).json(&body).send().await?;
    anyhow::ensure!(res.status().is_success(), "{}", res.text().await?);
    Ok(res.json().await?)
}

/// A dataset and a tiny model on the API node at `base`.
async fn setup(client: &reqwest::Client, base: &str) -> anyhow::Result<(String, String)> {
    let ds = post(
        client,
        format!("{base}/v1/datasets"),
        json!({"name": "digits", "source": "digits"}),
    )
    .await?;
    let model = post(
        client,
        format!("{base}/v1/models"),
        json!({"name": "tiny", "input_shape": [64], "layers": [
            {"type": "rescaling", "scale": 0.0625},
            {"type": "dense", "units": 10, "activation": "softmax"}]}),
    )
    .await?;
    Ok((
        ds["id"].as_str().unwrap().into(),
        model["id"].as_str().unwrap().into(),
    ))
}

fn body(model: &str, ds: &str, epochs: u32, batch: u32) -> Value {
    json!({"model_id": model, "dataset_id": ds,
           "compile": {"optimizer": "adam", "loss": "sparse_categorical_crossentropy"},
           "fit": {"epochs": epochs, "batch_size": batch, "seed": 1}})
}

/// Seconds from the first submission of `n` tiny jobs to the last one finished.
async fn claims(client: &reqwest::Client, base: &str, n: usize) -> anyhow::Result<f64> {
    let (ds, model) = setup(client, base).await?;
    let start = Instant::now();
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let job = post(client, format!("{base}/v1/jobs"), body(&model, &ds, 1, 1797)).await?;
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        loop {
            let j: Value = client
                .get(format!("{base}/v1/jobs/{id}"))
                .send()
                .await?
                .json()
                .await?;
            match j["status"].as_str() {
                Some("succeeded") => break,
                Some("failed" | "cancelled") => anyhow::bail!("job {id} ended {j}"),
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Milliseconds from each `epoch` event's commit to its arrival at a client of `api`.
async fn latencies(
    client: &reqwest::Client,
    api: &str,
    db_url: &str,
    epochs: u32,
) -> anyhow::Result<Vec<f64>> {
    let (ds, model) = setup(client, api).await?;
    let job = post(client, format!("{api}/v1/jobs"), body(&model, &ds, epochs, 256)).await?;
    let id = job["id"].as_str().unwrap().to_string();
    let res = client.get(format!("{api}/v1/jobs/{id}/events")).send().await?;
    let mut stream = res.bytes_stream().eventsource();
    let mut arrivals = Vec::new();
    while let Some(ev) = stream.next().await {
        let ev = ev?;
        if ev.event == "epoch" {
            arrivals.push((ev.id.parse::<i64>()?, time::OffsetDateTime::now_utc()));
        }
        if ev.event == "done" {
            break;
        }
    }
    // When each event was written, as stored with it (taken just before its transaction commits).
    let mut conn = sqlx::PgConnection::connect(db_url).await?;
    let written: Vec<(i64, String)> =
        sqlx::query_as("SELECT seq, created_at FROM job_events WHERE job_id = $1 AND event = 'epoch'")
            .bind(&id)
            .fetch_all(&mut conn)
            .await?;
    conn.close().await?;
    let written: std::collections::HashMap<i64, time::OffsetDateTime> = written
        .into_iter()
        .map(|(seq, at)| {
            let at = time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
                .expect("stored times are RFC 3339");
            (seq, at)
        })
        .collect();
    Ok(arrivals
        .iter()
        .map(|(seq, t)| (*t - written[seq]).as_seconds_f64() * 1000.0)
        .collect())
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let jobs = args.first().copied().unwrap_or(200);
    let epochs = args.get(1).copied().unwrap_or(200) as u32;
    let admin = std::env::var("FITD_BENCH_POSTGRES")
        .map_err(|_| anyhow::anyhow!("set FITD_BENCH_POSTGRES to a PostgreSQL URL"))?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir()?;

    // SQLite: one node with 8 workers.
    let sqlite = Db::Sqlite(dir.path().join("fitd.db"));
    let single = node(&sqlite, dir.path(), "single", 8, false).await?;
    let sqlite_s = claims(&client, &single, jobs).await?;

    // PostgreSQL: an API node and two worker nodes of 4.
    let pg = fitd::store::backend::create_postgres_database(&admin, "fitd_bench").await?;
    let api = node(&pg, dir.path(), "api", 0, false).await?;
    node(&pg, dir.path(), "worker-1", 4, true).await?;
    node(&pg, dir.path(), "worker-2", 4, true).await?;
    let pg_s = claims(&client, &api, jobs).await?;

    println!("claims: {jobs} tiny jobs, 8 worker threads");
    println!(
        "  SQLite, 1 node x 8 workers:        {sqlite_s:.2} s  {:.1} jobs/s",
        jobs as f64 / sqlite_s
    );
    println!(
        "  PostgreSQL, 2 nodes x 4 workers:   {pg_s:.2} s  {:.1} jobs/s",
        jobs as f64 / pg_s
    );
    println!("  ratio PostgreSQL / SQLite throughput: {:.2}", sqlite_s / pg_s);

    let lat = latencies(&client, &api, &pg.to_url(), epochs).await?;
    println!(
        "event latency, commit on a worker node -> SSE client of the API node ({} epoch events):",
        lat.len()
    );
    println!(
        "  p50 {:.2} ms  p99 {:.2} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    Ok(())
}
