//! Serving benchmark against the release binary, every figure next to its reference from the same
//! run: trains the book model (Flatten 28x28 -> Dense 100 relu -> Dropout 0.3 -> Dense 10 softmax)
//! for 2 epochs on the bundled MNIST 10k images through the jobs API, then measures
//!   1. the model's own compute time for 1,000 rows (in this process, 1 and 2 threads),
//!   2. a 1,000-row predict end to end in each body format (JSON integers, JSON 4-decimal floats,
//!      `.npy` uint8 and float32, v2 binary FP32 and UINT8, v2 JSON), as ratios to (1),
//!   3. the JSON parse of 1,000 rows (fitd's parser against serde_json into `Vec<Vec<f32>>`),
//!   4. single-row latency (p50/p99, 1 connection) idle and while another client loops 1,000-row
//!      JSON predicts,
//!   5. single-row latency (p50/p99) with 32 connections, idle and while a training job runs,
//!   6. the server's predict time of a 1,000-row batch when idle (split over the cores) and while
//!      single-row requests keep coming (one thread).
//!
//! Usage: `cargo bench --bench serving -- [--seconds S] [--requests N]` (defaults 5 and 40).

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fitd::domain::model::ModelSpec;
use fitd::nn::Model;
use fitd::serving::{fastjson, formats, npy, predict};
use ndarray::Array2;
use serde_json::{Value, json};

struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let dir = tempfile::tempdir().expect("temporary directory");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_fitd"))
        .args([
            "serve",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--workers",
            "1",
            "--db",
        ])
        .arg(dir.path().join("fitd.db"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the fitd binary starts");
    Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

fn gunzip(path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).expect("bundled MNIST file"))
        .read_to_end(&mut out)
        .expect("gzip");
    out
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn server_timing(res: &reqwest::Response, name: &str) -> Option<f64> {
    let h = res.headers().get("server-timing")?.to_str().ok()?;
    h.split(", ").find_map(|part| {
        let (n, d) = part.split_once(";dur=")?;
        (n == name).then(|| d.parse().ok()).flatten()
    })
}

#[derive(Clone)]
struct Req {
    path: String,
    body: bytes::Bytes,
    headers: Vec<(&'static str, String)>,
}

impl Req {
    fn json(path: &str, body: &Value) -> Req {
        Req {
            path: path.into(),
            body: body.to_string().into(),
            headers: vec![("content-type", "application/json".into())],
        }
    }

    async fn send(&self, client: &reqwest::Client, base: &str) -> reqwest::Response {
        let mut r = client
            .post(format!("{base}{}", self.path))
            .body(self.body.clone());
        for (k, v) in &self.headers {
            r = r.header(*k, v);
        }
        let res = r.send().await.expect("request sent");
        assert!(
            res.status().is_success(),
            "{} answered {}",
            self.path,
            res.status()
        );
        res
    }
}

/// Sends `req` `n` times in a row; returns wall times (ms) and the server's `parse` and `predict`.
async fn repeat(client: &reqwest::Client, base: &str, req: &Req, n: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut wall, mut parse, mut pred) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        let res = req.send(client, base).await;
        parse.push(server_timing(&res, "parse").unwrap_or(f64::NAN));
        pred.push(server_timing(&res, "predict").unwrap_or(f64::NAN));
        res.bytes().await.expect("body");
        wall.push(t.elapsed().as_secs_f64() * 1e3);
    }
    (wall, parse, pred)
}

/// Latencies (ms) of `conns` connections each sending `req` back to back for `secs`.
async fn load(base: &str, req: &Req, conns: usize, secs: f64) -> Vec<f64> {
    let stop = Instant::now() + Duration::from_secs_f64(secs);
    let tasks = (0..conns).map(|_| {
        let (base, req) = (base.to_string(), req.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut lat = Vec::new();
            while Instant::now() < stop {
                let t = Instant::now();
                req.send(&client, &base).await.bytes().await.expect("body");
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
            lat
        })
    });
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    all
}

/// Loops `req` on its own thread and runtime until `stop`; returns how many it sent.
fn background_loop(base: String, req: Req, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let client = reqwest::Client::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                req.send(&client, &base).await.bytes().await.expect("body");
                n += 1;
            }
            n
        })
    })
}

fn time_ms(reps: usize, mut f: impl FnMut()) -> Vec<f64> {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: f64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let secs = arg("--seconds", 5.0);
    let n_req = arg("--requests", 40.0) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(secs, n_req));
}

async fn run(secs: f64, n_req: usize) {
    let server = start_server();
    let base = server.base.clone();
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The book model, trained for 2 epochs on the bundled 10k images.
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/mnist-10k");
    let file = |name: &str| {
        reqwest::multipart::Part::bytes(std::fs::read(format!("{data}/{name}")).expect("bundled file"))
            .file_name(name.to_string())
    };
    let form = reqwest::multipart::Form::new()
        .text("name", "mnist10k")
        .part("images", file("train-images-idx3-ubyte.gz"))
        .part("labels", file("train-labels-idx1-ubyte.gz"));
    let ds: Value = client
        .post(format!("{base}/v1/datasets"))
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let spec = json!({"name": "book", "input_shape": [28, 28], "layers": [{"type": "flatten"},
        {"type": "dense", "units": 100, "activation": "relu"}, {"type": "dropout", "rate": 0.3},
        {"type": "dense", "units": 10, "activation": "softmax"}]});
    let model: Value = client
        .post(format!("{base}/v1/models"))
        .json(&spec)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job_body = |epochs: u32| {
        json!({"model_id": model["id"], "dataset_id": ds["id"], "validation": {"split": 0.2},
            "compile": {"optimizer": "adam", "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
            "fit": {"epochs": epochs, "batch_size": 32, "seed": 1}})
    };
    let job: Value = client
        .post(format!("{base}/v1/jobs"))
        .json(&job_body(2))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let saved = loop {
        let j: Value = client
            .get(format!("{base}/v1/jobs/{}", job["id"].as_str().unwrap()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match j["status"].as_str() {
            Some("succeeded") => break j["saved_model_id"].as_str().unwrap().to_string(),
            Some("failed" | "cancelled") => panic!("training failed: {j}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };

    // 1,000 test images, and every body format of them.
    let raw = gunzip(&format!("{data}/t10k-images-idx3-ubyte.gz"));
    let pixels: Vec<u8> = raw[16..16 + 1000 * 784].to_vec();
    let x =
        Array2::from_shape_vec((1000, 784), pixels.iter().map(|&p| p as f32).collect::<Vec<_>>()).unwrap();
    let rows_int: Vec<Vec<u8>> = pixels.chunks(784).map(|r| r.to_vec()).collect();
    let body_int = json!({"instances": rows_int});
    let float_rows: Vec<String> = pixels
        .chunks(784)
        .map(|r| {
            format!(
                "[{}]",
                r.iter()
                    .map(|&p| format!("{:.4}", p as f64 / 255.0 + 0.00005))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect();
    let body_float = format!("{{\"instances\": [{}]}}", float_rows.join(", "));
    let predict_path = format!("/v1/saved-models/{saved}/predict");
    let infer_path = format!("/v2/models/{saved}/infer");
    let npy_u8 = {
        let header = "{'descr': '|u1', 'fortran_order': False, 'shape': (1000, 28, 28), }";
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(&pixels);
        b
    };
    let npy_req = |body: Vec<u8>| Req {
        path: predict_path.clone(),
        body: body.into(),
        headers: vec![
            ("content-type", "application/x-npy".into()),
            ("accept", "application/x-npy".into()),
        ],
    };
    let binary_req = |datatype: &str, raw: Vec<u8>| {
        let header = json!({"inputs": [{"name": "input", "shape": [1000, 28, 28], "datatype": datatype,
            "parameters": {"binary_data_size": raw.len()}}], "parameters": {"binary_data_output": true}})
        .to_string();
        let mut body = header.clone().into_bytes();
        body.extend_from_slice(&raw);
        Req {
            path: infer_path.clone(),
            body: body.into(),
            headers: vec![("inference-header-content-length", header.len().to_string())],
        }
    };
    let f32_bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let formats_1000: Vec<(&str, Req)> = vec![
        ("v1 JSON, integer pixels", Req::json(&predict_path, &body_int)),
        (
            "v1 JSON, 4-decimal floats",
            Req {
                path: predict_path.clone(),
                body: body_float.clone().into(),
                headers: vec![("content-type", "application/json".into())],
            },
        ),
        ("v1 .npy uint8 in, .npy out", npy_req(npy_u8.clone())),
        (
            "v1 .npy float32 in, .npy out",
            npy_req(npy::encode_f32(&[1000, 28, 28], x.as_slice().unwrap())),
        ),
        (
            "v2 binary UINT8 in, binary out",
            binary_req("UINT8", pixels.clone()),
        ),
        (
            "v2 binary FP32 in, binary out",
            binary_req("FP32", f32_bytes.clone()),
        ),
        (
            "v2 JSON FP32",
            Req::json(
                &infer_path,
                &json!({"inputs": [{"name": "input", "shape": [1000, 784],
            "datatype": "FP32", "data": x.iter().copied().collect::<Vec<f32>>()}]}),
            ),
        ),
    ];

    // 1. The model's own compute for these rows, in this process.
    let weights = client
        .get(format!("{base}/v1/saved-models/{saved}/weights"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let (tensors, _) = formats::decode(&weights).unwrap();
    let spec: ModelSpec = serde_json::from_value(spec.clone()).unwrap();
    let mut engine = Model::new(&spec.to_nn(), 0).unwrap();
    engine.load_tensors(&tensors).unwrap();
    let compute1 = median(&mut time_ms(30, || {
        predict::predict_split(&engine, x.view(), 1).unwrap();
    }));
    let compute2 = median(&mut time_ms(30, || {
        predict::predict_split(&engine, x.view(), 2).unwrap();
    }));
    println!(
        "model compute, 1,000 rows in process: {compute1:.3} ms on 1 thread, {compute2:.3} ms on 2 threads"
    );

    // 2. End to end, each format; warm the model and the connection first.
    println!("\n1,000-row predict end to end ({n_req} requests each; wall ms as the client sees it):");
    println!(
        "| format | body | wall p50 | wall p90 | server parse p50 | server predict p50 | wall / compute (1 thr) | wall / compute (2 thr) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, req) in &formats_1000 {
        repeat(&client, &base, req, 3).await;
        let (mut wall, mut parse, mut pred) = repeat(&client, &base, req, n_req).await;
        let w50 = median(&mut wall);
        println!(
            "| {name} | {:.2} MB | {w50:.3} | {:.3} | {:.3} | {:.3} | {:.2} | {:.2} |",
            req.body.len() as f64 / 1e6,
            pct(&mut wall, 0.9),
            median(&mut parse),
            median(&mut pred),
            w50 / compute1,
            w50 / compute2
        );
    }

    // 3. JSON parse of 1,000 rows in process: fitd's parser against serde_json.
    #[derive(serde::Deserialize)]
    struct Rows {
        #[allow(dead_code)]
        instances: Vec<Vec<f32>>,
    }
    println!("\nJSON parse of 1,000 rows in process (median of 20, ms):");
    println!("| body | fitd | serde_json into Vec<Vec<f32>> | fitd / serde_json |");
    println!("|---|---|---|---|");
    for (name, body) in [
        ("integer pixels", body_int.to_string()),
        ("4-decimal floats", body_float.clone()),
    ] {
        let ours = median(&mut time_ms(20, || {
            std::hint::black_box(fastjson::instances_body(body.as_bytes()).expect("fast path"));
        }));
        let serde = median(&mut time_ms(20, || {
            std::hint::black_box(serde_json::from_slice::<Rows>(body.as_bytes()).unwrap());
        }));
        println!(
            "| {name} ({:.1} MB) | {ours:.3} | {serde:.3} | {:.2} |",
            body.len() as f64 / 1e6,
            ours / serde
        );
    }

    // 4. Single-row latency, idle and under a concurrent 1,000-row loop.
    let one = Req::json(&predict_path, &json!({"instances": [rows_int[0]]}));
    let single = |label: &'static str| {
        let (base, one) = (base.clone(), one.clone());
        async move {
            let mut lat = load(&base, &one, 1, secs).await;
            let (p50, p99) = (median(&mut lat), pct(&mut lat, 0.99));
            println!("| {label} | {} | {:.3} | {:.3} |", lat.len(), p50, p99);
            (p50, p99)
        }
    };
    println!("\nsingle-row predict, 1 connection, {secs} s each:");
    println!("| while | requests | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    let (i50, i99) = single("idle").await;
    let stop = Arc::new(AtomicBool::new(false));
    let bg = background_loop(base.clone(), formats_1000[1].1.clone(), stop.clone());
    let (l50, l99) = single("another client loops 1,000-row JSON (floats) predicts").await;
    stop.store(true, Ordering::Relaxed);
    let batches = bg.join().unwrap();
    println!(
        "under the loop / idle: p50 {:.2}x, p99 {:.2}x ({batches} batches ran meanwhile)",
        l50 / i50,
        l99 / i99
    );

    // 6. A 1,000-row batch alone (both cores) and while single-row requests keep coming (one core).
    let npy_req_u8 = &formats_1000[2].1;
    let (_, _, mut alone) = repeat(&client, &base, npy_req_u8, n_req).await;
    let stop = Arc::new(AtomicBool::new(false));
    let bg = background_loop(base.clone(), one.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, _, mut busy) = repeat(&client, &base, npy_req_u8, n_req).await;
    stop.store(true, Ordering::Relaxed);
    bg.join().unwrap();
    println!(
        "\nserver predict time of 1,000 rows: {:.3} ms alone (split over the cores), {:.3} ms while single rows keep coming (one thread)",
        median(&mut alone),
        median(&mut busy)
    );

    // 5. 32 connections of single-row predicts, idle and while a training job runs.
    println!("\nsingle-row predict, 32 connections, {secs} s each:");
    println!("| while | requests/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    let mut idle32 = load(&base, &one, 32, secs).await;
    let rate = idle32.len() as f64 / secs;
    let (a50, a99) = (median(&mut idle32), pct(&mut idle32, 0.99));
    println!("| idle | {rate:.0} | {a50:.3} | {a99:.3} |");
    let job: Value = client
        .post(format!("{base}/v1/jobs"))
        .json(&job_body(500))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job_id = job["id"].as_str().unwrap().to_string();
    loop {
        let j: Value = client
            .get(format!("{base}/v1/jobs/{job_id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if j["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut train32 = load(&base, &one, 32, secs).await;
    let rate = train32.len() as f64 / secs;
    let (t50, t99) = (median(&mut train32), pct(&mut train32, 0.99));
    println!("| a training job runs (book model, batch 32) | {rate:.0} | {t50:.3} | {t99:.3} |");
    let j: Value = client
        .get(format!("{base}/v1/jobs/{job_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    println!(
        "training / idle: p50 {:.2}x, p99 {:.2}x (the job reached epoch {})",
        t50 / a50,
        t99 / a99,
        j["epoch"]
    );
    client
        .post(format!("{base}/v1/jobs/{job_id}/cancel"))
        .send()
        .await
        .unwrap();

    // 7. Memory: a 191 MB predict body streamed without Content-Length is cut off at the predict limit.
    let pid = server.child.id();
    let status = |key: &str| -> f64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        s.lines()
            .find_map(|l| {
                l.strip_prefix(key)?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Resets the peak resident size the kernel reports (VmHWM) to the current one.
    let reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
    let before = status("VmRSS:");
    let chunk = bytes::Bytes::from(vec![b' '; 1 << 20]);
    let chunks = (0..191).map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
    let res = client
        .post(format!("{base}{predict_path}"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await;
    let answer = res
        .map(|r| r.status().to_string())
        .unwrap_or_else(|e| format!("connection closed ({e})"));
    println!(
        "\n191 MB predict body without Content-Length: {answer}; server resident {before:.0} MB before, peak {:.0} MB{}",
        status("VmHWM:"),
        if reset {
            ""
        } else {
            " (peak not reset: includes the earlier runs)"
        }
    );
    drop(server);
}
