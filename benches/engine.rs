//! Engine benchmark: the Keras book model, logistic regression and a deeper MLP on 48,000 + 12,000
//! synthetic 28x28 samples, seconds per epoch and samples/s, plus single-row predict latency.
//!
//! Usage: `cargo bench --bench engine -- [--epochs N] [--only name@bs,...] [--threads 1,2] [--no-predict]`
//! (`TrainConfig::threads` per run; 0 = every core; default 1).
//! With `FITD_BENCH_DATA=DIR` it trains on the IDX files `../shared/bench/make_idx.py DIR` writes
//! (the exact data the Keras / PyTorch / numpy references use); otherwise on data made the same way
//! by a Rust port of the generator (same construction, different random numbers).

use std::io::Read;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use fitd::nn::{
    Activation, Data, EpochOutcome, LayerConfig, LayerKind, Loss, Model, ModelConfig, Optimizer, Targets,
    TrainConfig, Trainer,
};
use ndarray::{Array1, Array2, s};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

const N_TRAIN: usize = 48_000;

fn read_idx(path: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).expect("IDX file"))
        .read_to_end(&mut out)
        .expect("gzip");
    let dims = out[3] as usize;
    out.split_off(4 + 4 * dims)
}

/// A port of `common.make_synthetic`: smooth class "modes" mixed into a shared pattern, brightness
/// jitter, Gaussian noise, clipped to [0, 1] and quantised to bytes as the IDX files are.
fn synthetic(seed: u64) -> (Array2<f32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut uni = move || (rng.next_u32() >> 8) as f64 / (1u32 << 24) as f64;
    let pattern = |uni: &mut dyn FnMut() -> f64| -> Vec<f64> {
        let g: Vec<f64> = (0..49).map(|_| uni()).collect();
        let up: Vec<f64> = (0..784).map(|p| g[(p / 28 / 4) * 7 + (p % 28) / 4]).collect();
        let mut acc = vec![0.0; 784];
        for dy in -2i32..=2 {
            for dx in -2i32..=2 {
                for (p, a) in acc.iter_mut().enumerate() {
                    let (r, c) = ((p / 28) as i32, (p % 28) as i32);
                    *a += up[(((r - dy).rem_euclid(28)) * 28 + (c - dx).rem_euclid(28)) as usize] / 25.0;
                }
            }
        }
        let (lo, hi) = acc
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        acc.iter().map(|v| (v - lo) / (hi - lo + 1e-12)).collect()
    };
    let shared = pattern(&mut uni);
    let _bases: Vec<Vec<f64>> = (0..10).map(|_| pattern(&mut uni)).collect();
    let modes: Vec<Vec<f64>> = (0..40)
        .map(|_| {
            pattern(&mut uni)
                .iter()
                .zip(&shared)
                .map(|(own, sh)| 0.6 * sh + 0.4 * own)
                .collect()
        })
        .collect();
    let n = 60_000;
    let mut x = Array2::zeros((n, 784));
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let class = (uni() * 10.0) as usize % 10;
        let mode = &modes[class * 4 + (uni() * 4.0) as usize % 4];
        let bright = 0.85 + 0.25 * uni();
        for p in 0..784 {
            // Box-Muller normal noise.
            let z = (-2.0 * (uni() + 1e-12).ln()).sqrt() * (std::f64::consts::TAU * uni()).cos();
            let v = (mode[p] * bright + 0.3 * z).clamp(0.0, 1.0);
            x[[i, p]] = ((v * 255.0).round() / 255.0) as f32;
        }
        y.push(class as u32);
    }
    (x, y)
}

fn load() -> (Array2<f32>, Vec<u32>, &'static str) {
    match std::env::var_os("FITD_BENCH_DATA") {
        Some(dir) => {
            let dir = std::path::PathBuf::from(dir);
            let px = read_idx(&dir.join("synthetic-images-idx3-ubyte.gz"));
            let labels = read_idx(&dir.join("synthetic-labels-idx1-ubyte.gz"));
            let x = Array2::from_shape_vec(
                (labels.len(), 784),
                px.iter().map(|&p| p as f32 / 255.0).collect(),
            )
            .expect("28x28 images");
            (
                x,
                labels.iter().map(|&l| l as u32).collect(),
                "common.make_synthetic(1234) via make_idx.py",
            )
        }
        None => {
            let (x, y) = synthetic(1234);
            (
                x,
                y,
                "Rust port of the generator (set FITD_BENCH_DATA for the reference data)",
            )
        }
    }
}

fn dense(units: usize, activation: Activation) -> LayerConfig {
    LayerConfig::new(LayerKind::Dense {
        units,
        activation,
        use_bias: true,
    })
}

fn model(name: &str) -> ModelConfig {
    let mut layers = vec![LayerConfig::new(LayerKind::Flatten)];
    match name {
        "book_adam" => layers.extend([
            dense(100, Activation::Relu),
            LayerConfig::new(LayerKind::Dropout { rate: 0.3 }),
            dense(10, Activation::Softmax),
        ]),
        "logreg_sgd" => layers.push(dense(10, Activation::Softmax)),
        "deep300_100_adam" => layers.extend([
            dense(300, Activation::Relu),
            dense(100, Activation::Relu),
            dense(10, Activation::Softmax),
        ]),
        other => panic!("unknown run {other}"),
    }
    ModelConfig {
        input_shape: vec![28, 28],
        layers,
    }
}

/// Busy CPU seconds of the whole machine and of this process, from `/proc` (Linux; `None` elsewhere),
/// so each row can say how much of the 2 cores the rest of the machine took meanwhile.
fn cpu_seconds() -> Option<(f64, f64)> {
    let tick = 100.0; // USER_HZ on every Linux ABI fitd targets
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|t| t.parse().unwrap_or(0.0))
        .collect();
    let machine = (v.iter().sum::<f64>() - v.get(3)? - v.get(4)?) / tick;
    let own = std::fs::read_to_string("/proc/self/stat").ok()?;
    let f: Vec<&str> = own.rsplit_once(')')?.1.split_whitespace().collect();
    let me = (f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / tick;
    Some((machine, me))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let epochs: usize = arg("--epochs").map_or(5, |e| e.parse().expect("--epochs N"));
    let only: Vec<String> = arg("--only").map_or(Vec::new(), |o| o.split(',').map(String::from).collect());
    // Accuracy after 5 epochs depends strongly on the seed on this data: compare over several.
    let seed: u64 = arg("--seed").map_or(0, |s| s.parse().expect("--seed N"));
    let thread_counts: Vec<usize> = arg("--threads").map_or(vec![1], |t| {
        t.split(',')
            .map(|n| n.parse().expect("--threads N[,N...]"))
            .collect()
    });

    let t = Instant::now();
    let (x, y, source) = load();
    println!("data: {source} ({:.1} s to load)", t.elapsed().as_secs_f64());
    let train = Data::new(
        x.slice(s![..N_TRAIN, ..]).to_owned(),
        Targets::Classes(Array1::from(y[..N_TRAIN].to_vec())),
    );
    let val = Data::new(
        x.slice(s![N_TRAIN.., ..]).to_owned(),
        Targets::Classes(Array1::from(y[N_TRAIN..].to_vec())),
    );
    println!(
        "{:<18}{:>5}{:>4}{:>4}{:>8}{:>9}{:>9}{:>7}{:>9}{:>8}{:>8}{:>7}",
        "run",
        "bs",
        "th",
        "ep",
        "ep1 s",
        "epoch s",
        "train s",
        "val s",
        "samp/s",
        "tr acc",
        "val acc",
        "other"
    );
    let runs = [
        ("book_adam", 32),
        ("book_adam", 256),
        ("logreg_sgd", 32),
        ("deep300_100_adam", 32),
    ];
    let mut book = None;
    let runs = runs
        .iter()
        .flat_map(|&(name, bs)| thread_counts.iter().map(move |&th| (name, bs, th)));
    for (name, bs, threads) in runs {
        if !only.is_empty() && !only.iter().any(|o| o == name || *o == format!("{name}@{bs}")) {
            continue;
        }
        let opt = if name.ends_with("sgd") {
            Optimizer::sgd_default()
        } else {
            Optimizer::adam_default()
        };
        let mut cfg = TrainConfig::new(Loss::SparseCategoricalCrossentropy, opt);
        cfg.epochs = epochs;
        cfg.batch_size = bs;
        cfg.threads = threads;
        cfg.seed = seed;
        let m = Model::new(&model(name), seed).expect("valid model");
        let mut trainer = Trainer::new(m, cfg, train.clone(), Some(val.clone())).expect("valid data");
        let never = AtomicBool::new(false);
        let (mut walls, mut trains) = (Vec::new(), Vec::new());
        let mut last = None;
        let (cpu0, wall0) = (cpu_seconds(), Instant::now());
        for _ in 0..epochs {
            let start = Instant::now();
            let mut train_done = Duration::ZERO;
            let outcome = trainer
                .run_epoch(
                    &mut |done, total| {
                        if done == total {
                            train_done = start.elapsed()
                        }
                    },
                    &never,
                )
                .expect("training");
            walls.push(start.elapsed().as_secs_f64());
            trains.push(train_done.as_secs_f64());
            if let EpochOutcome::Completed { logs, .. } = outcome {
                last = Some(logs);
            }
        }
        // Cores the rest of the machine used during this run: busy machine time minus our own.
        let other = match (cpu0, cpu_seconds()) {
            (Some((m0, o0)), Some((m1, o1))) => {
                ((m1 - m0) - (o1 - o0)).max(0.0) / wall0.elapsed().as_secs_f64()
            }
            _ => f64::NAN,
        };
        let logs = last.expect("at least one epoch");
        let tail = |v: &[f64]| median(if v.len() > 1 { v[1..].to_vec() } else { v.to_vec() });
        let (epoch_s, train_s) = (tail(&walls), tail(&trains));
        println!(
            "{:<18}{:>5}{:>4}{:>4}{:>8.3}{:>9.3}{:>9.3}{:>7.3}{:>9.0}{:>8.4}{:>8.4}{:>7.2}",
            name,
            bs,
            threads,
            epochs,
            walls[0],
            epoch_s,
            train_s,
            epoch_s - train_s,
            N_TRAIN as f64 / train_s,
            logs.accuracy.unwrap_or(f64::NAN),
            logs.val_accuracy.unwrap_or(f64::NAN),
            other
        );
        if name == "book_adam" {
            book = Some(trainer.finish());
        }
    }
    let Some(book) = book.filter(|_| !args.iter().any(|a| a == "--no-predict")) else {
        return;
    };
    println!("\npredict latency (book model, in-process)");
    for rows in [1usize, 1000] {
        let xs = val.x.view().slice_move(s![..rows, ..]);
        let mut times = Vec::new();
        let start = Instant::now();
        while times.len() < 200 || start.elapsed() < Duration::from_secs(1) {
            let t = Instant::now();
            std::hint::black_box(book.predict(xs).expect("predict"));
            times.push(t.elapsed().as_secs_f64());
        }
        let min = times.iter().copied().fold(f64::MAX, f64::min);
        println!(
            "  {rows:>5} rows: median {:.1} us, min {:.1} us ({} calls)",
            median(times.clone()) * 1e6,
            min * 1e6,
            times.len()
        );
    }
}
