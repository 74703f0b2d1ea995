//! Measures what the job service adds to training: the Keras book model (784 -> 100 relu ->
//! dropout 0.3 -> 10 softmax, Adam, batch 32, validation split 0.2) on 60,000 samples (the 8,000
//! MNIST training images of `tests/data/mnist-10k`, tiled, scaled to [0, 1]; 48,000 train + 12,000
//! validation like the engine benchmark), once with the bare engine (`nn::Trainer` in a loop) and
//! once as a job over HTTP, alternating rounds, same data and seed.
//!
//! Usage: `cargo run --release --example job_overhead -- [epochs] [rounds]` (default 5 and 3).
//! With `FITD_BENCH_POSTGRES=postgres://...` the jobs run on a cluster instead: a fresh database on
//! that server, an API node with no workers and a worker node (`fitd worker`) with one.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use fitd::config::Config;
use fitd::domain::model::ModelSpec;
use fitd::nn::{self, Data, EpochOutcome, Loss, Model, Optimizer, Targets, TrainConfig, Trainer};
use fitd::startup::Application;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let epochs = args.first().copied().unwrap_or(5);
    let rounds = args.get(1).copied().unwrap_or(3);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let dir = tempfile::tempdir()?;
    let (base, store) = match std::env::var("FITD_BENCH_POSTGRES") {
        Ok(admin) => {
            let db = fitd::store::backend::create_postgres_database(&admin, "fitd_bench").await?;
            let mut config = Config::for_tests(db.clone());
            config.workers = 0;
            config.data_dir = Some(dir.path().join("api"));
            let api = Application::build(config).await?;
            let mut config = Config::for_tests(db);
            config.workers = 1;
            config.data_dir = Some(dir.path().join("worker"));
            let worker = Application::build_worker(config).await?;
            tokio::spawn(worker.run_until(std::future::pending()));
            println!("jobs run on a worker node of a PostgreSQL cluster");
            let base = format!("http://127.0.0.1:{}", api.port());
            let store = api.state().store.clone();
            tokio::spawn(api.run_until(std::future::pending()));
            (base, store)
        }
        Err(_) => {
            let mut config = Config::for_tests(dir.path().join("fitd.db"));
            config.workers = 1;
            let app = Application::build(config).await?;
            let base = format!("http://127.0.0.1:{}", app.port());
            let store = app.state().store.clone();
            tokio::spawn(app.run_until(std::future::pending()));
            (base, store)
        }
    };
    let client = reqwest::Client::new();

    let data_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mnist-10k");
    let form = Form::new()
        .text("name", "mnist-10k")
        .part(
            "images",
            Part::bytes(std::fs::read(data_dir.join("train-images-idx3-ubyte.gz"))?).file_name("images.gz"),
        )
        .part(
            "labels",
            Part::bytes(std::fs::read(data_dir.join("train-labels-idx1-ubyte.gz"))?).file_name("labels.gz"),
        );
    let small: Value = client
        .post(format!("{base}/v1/datasets"))
        .multipart(form)
        .send()
        .await?
        .json()
        .await?;
    let small =
        fitd::store::datasets::load_arrays(&store, small["id"].as_str().expect("dataset created")).await?;
    let fitd::data::Labels::Classes(labels) = small.labels else {
        anyhow::bail!("MNIST has class labels")
    };
    let n = 60_000;
    let max = small.x.iter().copied().fold(0.0f32, f32::max).max(1.0);
    let x = ndarray::Array2::from_shape_fn((n, 784), |(i, j)| small.x[(i % small.x.nrows(), j)] / max);
    let y = ndarray::Array1::from_shape_fn(n, |i| labels[i % labels.len()] as i64);
    let (mut xb, mut yb) = (Vec::new(), Vec::new());
    ndarray_npy::WriteNpyExt::write_npy(&x, &mut xb)?;
    ndarray_npy::WriteNpyExt::write_npy(&y, &mut yb)?;
    let form = Form::new()
        .text("name", "mnist-tiled")
        .text("input_shape", "28,28")
        .part("x", Part::bytes(xb).file_name("x.npy"))
        .part("y", Part::bytes(yb).file_name("y.npy"));
    let res = client
        .post(format!("{base}/v1/datasets"))
        .multipart(form)
        .send()
        .await?;
    let ds: Value = res.json().await?;
    let ds = ds["id"]
        .as_str()
        .unwrap_or_else(|| panic!("dataset created: {ds}"))
        .to_string();
    let spec = json!({"name": "book", "input_shape": [28, 28], "layers": [
        {"type": "flatten"},
        {"type": "dense", "units": 100, "activation": "relu"},
        {"type": "dropout", "rate": 0.3},
        {"type": "dense", "units": 10, "activation": "softmax"}]});
    let model: Value = client
        .post(format!("{base}/v1/models"))
        .json(&spec)
        .send()
        .await?
        .json()
        .await?;
    let model_id = model["id"].as_str().expect("model created").to_string();
    let model_spec: ModelSpec = serde_json::from_value(json!({
        "input_shape": spec["input_shape"], "layers": spec["layers"]}))?;

    let arrays = fitd::store::datasets::load_arrays(&store, &ds).await?;
    let y = match arrays.labels {
        fitd::data::Labels::Classes(c) => Targets::Classes(c),
        fitd::data::Labels::Targets(t) => Targets::Dense(t),
    };
    let (train, val) = Trainer::split_validation(arrays.x.view(), &y, 0.2)?;
    let seed = 7;

    let mut engine = Vec::new();
    let mut api = Vec::new();
    let mut api_wall = Vec::new();
    for round in 0..rounds {
        // Bare engine, on its own thread like a worker.
        let (cfg, t, v) = (model_spec.to_nn(), train.clone(), val.clone());
        let times = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<f64>> {
            nn::enable_flush_to_zero();
            let mut tc = TrainConfig::new(Loss::SparseCategoricalCrossentropy, Optimizer::adam_default());
            tc.epochs = epochs;
            tc.batch_size = 32;
            tc.seed = seed;
            let mut trainer = Trainer::new(Model::new(&cfg, seed)?, tc, t, Some(Data::clone(&v)))?;
            let never = AtomicBool::new(false);
            let mut out = Vec::new();
            while !trainer.is_finished() {
                let t0 = Instant::now();
                if let EpochOutcome::Completed { .. } = trainer.run_epoch(&mut |_, _| {}, &never)? {
                    out.push(t0.elapsed().as_secs_f64());
                }
            }
            Ok(out)
        })
        .await??;
        engine.extend(times.iter().copied());

        // The same through the API.
        let body = json!({"model_id": model_id, "dataset_id": ds, "validation": {"split": 0.2},
            "compile": {"optimizer": "adam", "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
            "fit": {"epochs": epochs, "batch_size": 32, "seed": seed}});
        let t0 = Instant::now();
        let job: Value = client
            .post(format!("{base}/v1/jobs"))
            .json(&body)
            .send()
            .await?
            .json()
            .await?;
        let id = job["id"].as_str().expect("job created").to_string();
        let job = loop {
            let j: Value = client
                .get(format!("{base}/v1/jobs/{id}"))
                .send()
                .await?
                .json()
                .await?;
            if j["status"] != "queued" && j["status"] != "running" {
                break j;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let wall = t0.elapsed().as_secs_f64();
        assert_eq!(job["status"], "succeeded", "{job}");
        let h: Value = client
            .get(format!("{base}/v1/jobs/{id}/history"))
            .send()
            .await?
            .json()
            .await?;
        // Epoch to epoch as stored: training, validation, the checkpoint and the transaction.
        let stamps: Vec<String> =
            sqlx::query_scalar("SELECT created_at FROM job_epochs WHERE job_id = $1 ORDER BY epoch")
                .bind(&id)
                .fetch_all(&store.pool)
                .await?;
        let stamps: Vec<time::OffsetDateTime> = stamps
            .iter()
            .map(|s| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339))
            .collect::<Result<_, _>>()?;
        let per_epoch: Vec<f64> = stamps
            .windows(2)
            .map(|w| (w[1] - w[0]).as_seconds_f64())
            .collect();
        api.extend(per_epoch.iter().copied());
        api_wall.push(wall / epochs as f64);
        println!(
            "round {round}: engine {:.3} s/epoch, job {:.3} s/epoch (stored epoch to stored epoch), {:.3} s/epoch (wall, submit to \
             succeeded incl. data load, checkpoints, saved model); final val_accuracy {}",
            median(times),
            median(per_epoch),
            wall / epochs as f64,
            h["history"]["val_accuracy"][epochs - 1]
        );
    }
    let (e, a, w) = (median(engine), median(api), median(api_wall));
    println!(
        "median over {rounds} rounds x {epochs} epochs: engine {e:.3} s/epoch; job {a:.3} s/epoch epoch-to-epoch ({:+.1} %); \
         job wall {w:.3} s/epoch ({:+.1} %)",
        (a / e - 1.0) * 100.0,
        (w / e - 1.0) * 100.0
    );
    Ok(())
}
