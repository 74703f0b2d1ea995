//! Measures a job's data path for 60,000 28x28 uint8 images (the 8,000 MNIST training images of
//! `tests/data/mnist-10k`, tiled) stored as a dataset: from the moment a worker has claimed the job
//! to the end of its first batch (load the arrays, split 20 % off for validation, build the trainer,
//! run one batch of 32 of the book model), with the dataset cache cold (dropped before each run;
//! the file system's page cache stays warm, as it does for numpy) and warm (loaded by the run
//! before), against numpy's `np.load` of the same two `.npy` files in the same round.
//!
//! Usage: `cargo run --release --example data_path -- [rounds]` (default 5). Needs
//! `~/.venv-bench/bin/python` with numpy (or `FITD_BENCH_PYTHON`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use fitd::data::{Dataset, Features, Labels};
use fitd::domain::job::Validation;
use fitd::domain::model::ModelSpec;
use fitd::nn::{Loss, Model, Optimizer, TrainConfig, Trainer};
use fitd::store::{Store, datasets};
use serde_json::json;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn gunzip(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(path)?),
        &mut out,
    )?;
    Ok(out)
}

/// Seconds from the start of the load to the end of the first training batch.
async fn first_batch(store: &Store, id: &str, spec: &ModelSpec) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let (train, val) = fitd::jobs::data::load(
        store,
        id,
        &Validation::Split(0.2),
        Loss::SparseCategoricalCrossentropy,
        10,
    )
    .await?;
    let cfg = spec.to_nn();
    tokio::task::block_in_place(|| -> anyhow::Result<f64> {
        let mut tc = TrainConfig::new(Loss::SparseCategoricalCrossentropy, Optimizer::adam_default());
        tc.batch_size = 32;
        tc.seed = 7;
        let mut trainer = Trainer::new(Model::new(&cfg, 7)?, tc, train, val)?;
        let stop = AtomicBool::new(false);
        let mut first = None;
        trainer.run_epoch(
            &mut |done, _| {
                if done == 1 {
                    first = Some(t0.elapsed().as_secs_f64());
                    stop.store(true, Ordering::Relaxed);
                }
            },
            &stop,
        )?;
        first.ok_or_else(|| anyhow::anyhow!("no batch ran"))
    })
}

/// Median seconds of `np.load` of `x.npy` and `y.npy` in `dir` over `n` loads in one process.
fn np_load(python: &str, dir: &std::path::Path, n: usize) -> anyhow::Result<f64> {
    let script = "import sys, time, numpy as np\n\
        d, n = sys.argv[1], int(sys.argv[2])\n\
        ts = []\n\
        for _ in range(n):\n\
        \x20   t = time.perf_counter(); x = np.load(d + '/x.npy'); y = np.load(d + '/y.npy')\n\
        \x20   ts.append(time.perf_counter() - t); del x, y\n\
        ts.sort(); print(ts[len(ts) // 2])\n";
    let out = std::process::Command::new(python)
        .args(["-c", script])
        .arg(dir)
        .arg(n.to_string())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let python = std::env::var("FITD_BENCH_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.venv-bench/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    fitd::nn::enable_flush_to_zero();
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("fitd.db").into(), None).await?;

    let data_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mnist-10k");
    let images = gunzip(&data_dir.join("train-images-idx3-ubyte.gz"))?;
    let labels = gunzip(&data_dir.join("train-labels-idx1-ubyte.gz"))?;
    let (pixels, classes) = (&images[16..], &labels[8..]);
    let small = classes.len();
    let n = 60_000;
    let x = ndarray::Array2::from_shape_fn((n, 784), |(i, j)| pixels[(i % small) * 784 + j]);
    let y = ndarray::Array1::from_shape_fn(n, |i| u32::from(classes[i % small]));
    let row = datasets::create(
        &store,
        datasets::NewDataset {
            name: "mnist-tiled".into(),
            source: "npy".into(),
            parent_id: None,
            derivation: None,
            image_shape: None,
            extra: Vec::new(),
        },
        Dataset {
            x: Features::U8(x),
            labels: Labels::Classes(y),
            input_shape: vec![28, 28],
        },
    )
    .await?;
    let id = row.id;
    let files = store.dataset_dir(&id);
    println!(
        "dataset: {n} samples, x.npy {} bytes, y.npy {} bytes",
        std::fs::metadata(files.join("x.npy"))?.len(),
        std::fs::metadata(files.join("y.npy"))?.len()
    );
    let spec: ModelSpec = serde_json::from_value(json!({"input_shape": [28, 28], "layers": [
        {"type": "flatten"},
        {"type": "rescaling", "scale": 0.00392156862745098},
        {"type": "dense", "units": 100, "activation": "relu"},
        {"type": "dropout", "rate": 0.3},
        {"type": "dense", "units": 10, "activation": "softmax"}]}))?;

    let (mut np, mut cold, mut warm, mut ratios) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let numpy = np_load(&python, &files, 5)?;
        store.dataset_cache().invalidate(&id);
        let c = first_batch(&store, &id, &spec).await?;
        let w = first_batch(&store, &id, &spec).await?;
        println!(
            "round {round}: np.load {:.1} ms, cold {:.1} ms ({:.2}x np.load), warm {:.2} ms",
            numpy * 1e3,
            c * 1e3,
            c / numpy,
            w * 1e3
        );
        np.push(numpy);
        cold.push(c);
        warm.push(w);
        ratios.push(c / numpy);
    }
    let stats = store.dataset_cache().stats();
    println!(
        "median over {rounds} rounds: np.load {:.1} ms; load to first batch cold {:.1} ms ({:.2}x np.load, \
         median of per-round ratios), warm {:.2} ms (max {:.2} ms); cache hits {} misses {}",
        median(np) * 1e3,
        median(cold) * 1e3,
        median(ratios),
        median(warm.clone()) * 1e3,
        warm.iter().copied().fold(0.0, f64::max) * 1e3,
        stats.hits,
        stats.misses
    );
    Ok(())
}
