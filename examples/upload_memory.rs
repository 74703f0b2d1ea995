//! Peak resident memory of the real server while it takes one dataset upload: normal uploads of
//! 60,000 28x28 images (the 8,000 MNIST training images of `tests/data/mnist-10k`, tiled) as gzipped
//! IDX, float32 NPY and CSV, and every kind of hostile upload (headers declaring far more data than
//! is sent, decompression bombs, a 300 MB text part, an endless CSV row, a 250-character file name).
//!
//! Each case starts a fresh `fitd serve` (the release binary next to this example) on an empty
//! database, waits until it is idle, resets the kernel's peak-RSS counter (`/proc/<pid>/clear_refs`),
//! sends the upload, and reads `VmHWM` (peak) from `/proc/<pid>/status`. The table shows the peak
//! above the idle resident size, and for normal uploads its ratio to the dataset's float32 size.
//!
//! Usage: `cargo build --release && cargo run --release --example upload_memory -- [rounds]`
//! (default 3 rounds; the median of the rounds is printed).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::multipart::{Form, Part};

/// One upload to measure.
struct Case {
    name: String,
    /// The dataset's size as float32 features, for normal uploads.
    float32_bytes: Option<u64>,
    /// Builds the request body (a fresh form each round).
    form: Box<dyn Fn() -> Form>,
    /// How many copies are sent at once.
    copies: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn proc_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .ok_or_else(|| anyhow::anyhow!("{key} not in /proc/{pid}/status"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("no value in {line:?}"))?
        .parse()?)
}

/// A `fitd serve` child on a fresh database in `dir`.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    async fn start(bin: &Path, dir: &Path, client: &reqwest::Client) -> anyhow::Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(bin)
            .arg("serve")
            .env("FITD_ADDR", format!("127.0.0.1:{port}"))
            .env("FITD_DB", dir.join("fitd.db"))
            .env("FITD_WORKERS", "1")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            if let Ok(r) = client.get(format!("{base}/readyz")).send().await
                && r.status().is_success()
            {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(20),
                "the server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Server { child, base })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Peak resident memory above idle (bytes) while the server takes the forms (sent at once), and the
/// answers' statuses.
async fn measure(bin: &Path, client: &reqwest::Client, forms: Vec<Form>) -> anyhow::Result<(u64, Vec<u16>)> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(bin, dir.path(), client).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = server.pid();
    let idle = proc_kib(pid, "VmRSS:")?;
    // "5" resets the peak resident size to the current one.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")?;
    let url = format!("{}/v1/datasets", server.base);
    let sends = forms.into_iter().map(|form| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let res = client.post(url).multipart(form).send().await?;
            let status = res.status().as_u16();
            let _ = res.bytes().await;
            Ok::<u16, reqwest::Error>(status)
        }
    });
    let mut statuses = futures_util::future::try_join_all(sends).await?;
    statuses.sort_unstable();
    let peak = proc_kib(pid, "VmHWM:")?;
    Ok((peak.saturating_sub(idle) * 1024, statuses))
}

fn gzip(bytes: &[u8], level: u32) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    enc.write_all(bytes).expect("writing to memory");
    enc.finish().expect("writing to memory")
}

fn idx_header(dims: &[u32]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out
}

fn npy_header(descr: &str, shape: &str) -> Vec<u8> {
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    dict.push_str(&" ".repeat((64 - (11 + dict.len()) % 64) % 64));
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

fn npz(members: &[(&str, &[u8], bool)]) -> anyhow::Result<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes, deflate) in members {
        let method = if *deflate {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(method)
            .large_file(bytes.len() > u32::MAX as usize);
        zip.start_file(*name, options)?;
        zip.write_all(bytes)?;
    }
    Ok(zip.finish()?.into_inner())
}

fn file(bytes: &Bytes, name: &str) -> Part {
    Part::stream_with_length(bytes.clone(), bytes.len() as u64).file_name(name.to_string())
}

/// A body of `len` bytes of `byte`, generated as it is sent.
fn generated(len: usize, byte: u8) -> Part {
    let chunk = Bytes::from(vec![byte; 1 << 16]);
    let chunks = len.div_ceil(chunk.len());
    let last = len - (chunks - 1) * chunk.len();
    let stream = futures_util::stream::iter((0..chunks).map(move |i| {
        Ok::<Bytes, std::io::Error>(if i + 1 == chunks {
            chunk.slice(..last)
        } else {
            chunk.clone()
        })
    }));
    Part::stream_with_length(reqwest::Body::wrap_stream(stream), len as u64)
}

fn read_idx_gz(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(path)?),
        &mut out,
    )?;
    Ok(out)
}

fn cases() -> anyhow::Result<Vec<Case>> {
    let n = 60_000usize;
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/mnist-10k");
    let images = read_idx_gz(&data.join("train-images-idx3-ubyte.gz"))?;
    let labels = read_idx_gz(&data.join("train-labels-idx1-ubyte.gz"))?;
    let (pixels, classes) = (&images[16..], &labels[8..]);
    let px: Vec<u8> = (0..n * 784).map(|i| pixels[i % pixels.len()]).collect();
    let ys: Vec<u8> = (0..n).map(|i| classes[i % classes.len()]).collect();
    let float32_bytes = (n * 784 * 4) as u64;

    let idx_images = Bytes::from(gzip(&[idx_header(&[n as u32, 28, 28]), px.clone()].concat(), 6));
    let idx_labels = Bytes::from(gzip(&[idx_header(&[n as u32]), ys.clone()].concat(), 6));
    let npy_x = Bytes::from(
        [
            npy_header("<f4", &format!("({n}, 28, 28)")),
            px.iter().flat_map(|&p| f32::from(p).to_le_bytes()).collect(),
        ]
        .concat(),
    );
    let npy_y = Bytes::from([npy_header("|u1", &format!("({n},)")), ys.clone()].concat());
    let mut csv = String::from("label");
    for j in 1..=784 {
        csv.push_str(&format!(",pixel{j}"));
    }
    csv.push('\n');
    for i in 0..n {
        csv.push_str(&ys[i].to_string());
        for p in &px[i * 784..(i + 1) * 784] {
            csv.push(',');
            csv.push_str(&p.to_string());
        }
        csv.push('\n');
    }
    let csv = Bytes::from(csv);

    // Hostile files, as in the attacks: each small, each declaring or expanding to far more.
    let trillion = Bytes::from([npy_header("<f4", "(1000000, 1000000)"), vec![0; 208]].concat());
    let small_y = Bytes::from([npy_header("|u1", "(2,)"), vec![0, 1]].concat());
    let npz_trillion = Bytes::from(npz(&[("x.npy", &trillion, false), ("y.npy", &small_y, false)])?);
    let bomb_len = 4_500_000_000usize;
    let npz_bomb = {
        // 4.5 GB of zeros deflated, built chunk by chunk.
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(true);
        zip.start_file("x.npy", options)?;
        zip.write_all(&npy_header("|u1", &format!("({bomb_len},)")))?;
        let zeros = vec![0u8; 1 << 24];
        for _ in 0..bomb_len / zeros.len() {
            zip.write_all(&zeros)?;
        }
        zip.write_all(&zeros[..bomb_len % zeros.len()])?;
        zip.start_file("y.npy", options)?;
        zip.write_all(&small_y)?;
        Bytes::from(zip.finish()?.into_inner())
    };
    // An IDX header for `samples` images, then `zeros` bytes of zeros, gzipped chunk by chunk.
    let gz_bomb = |samples: u32, zeros: usize| -> Bytes {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&idx_header(&[samples, 28, 28])).expect("memory");
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..zeros / chunk.len() {
            enc.write_all(&chunk).expect("memory");
        }
        enc.write_all(&chunk[..zeros % chunk.len()]).expect("memory");
        Bytes::from(enc.finish().expect("memory"))
    };
    // 1.3 GB and 2.7 GB of zeros behind honest headers (the 261 KB and 522 KB bombs), and 1,000
    // images followed by 1.3 GB more than the header declares.
    let gz_13 = gz_bomb(1_700_000, 1_700_000 * 784);
    let gz_26 = gz_bomb(3_400_000, 3_400_000 * 784);
    let gz_liar = gz_bomb(1000, 1_300_000_000);
    let small_labels = Bytes::from(gzip(&[idx_header(&[1000]), vec![1; 1000]].concat(), 6));
    let mut long_row = String::from("label,a\n1,");
    long_row.push_str(&"9".repeat(300_000_000));
    let long_row = Bytes::from(long_row);

    let mb = |b: usize| b as f64 / 1e6;
    let idx_60k = || -> Box<dyn Fn() -> Form> {
        let (i, l) = (idx_images.clone(), idx_labels.clone());
        Box::new(move || {
            Form::new()
                .part("images", file(&i, "train-images-idx3-ubyte.gz"))
                .part("labels", file(&l, "train-labels-idx1-ubyte.gz"))
        })
    };
    let mut cases = vec![
        Case {
            name: format!(
                "60k images, gzipped IDX ({:.1} MB sent)",
                mb(idx_images.len() + idx_labels.len())
            ),
            float32_bytes: Some(float32_bytes),
            form: idx_60k(),
            copies: 1,
        },
        Case {
            name: "4 of those at once (2 upload slots)".to_string(),
            float32_bytes: Some(float32_bytes),
            form: idx_60k(),
            copies: 4,
        },
        Case {
            name: format!(
                "60k images, float32 NPY x + y ({:.1} MB sent)",
                mb(npy_x.len() + npy_y.len())
            ),
            float32_bytes: Some(float32_bytes),
            form: Box::new({
                let (x, y) = (npy_x.clone(), npy_y.clone());
                move || {
                    Form::new()
                        .part("x", file(&x, "x.npy"))
                        .part("y", file(&y, "y.npy"))
                }
            }),
            copies: 1,
        },
        Case {
            name: format!(
                "60k images, CSV in Kaggle's layout ({:.1} MB sent)",
                mb(csv.len())
            ),
            float32_bytes: Some(float32_bytes),
            form: Box::new(move || Form::new().part("file", file(&csv, "fashion-mnist_train.csv"))),
            copies: 1,
        },
    ];
    let images_with = |images: &Bytes| -> Box<dyn Fn() -> Form> {
        let (i, l) = (images.clone(), small_labels.clone());
        Box::new(move || {
            Form::new()
                .part("images", file(&i, "i.gz"))
                .part("labels", file(&l, "l.gz"))
        })
    };
    let hostile: Vec<(String, Box<dyn Fn() -> Form>)> = vec![
        (
            format!("{}-byte NPY declaring (1000000, 1000000) float32", trillion.len()),
            Box::new({
                let (x, y) = (trillion.clone(), small_y.clone());
                move || {
                    Form::new()
                        .part("x", file(&x, "x.npy"))
                        .part("y", file(&y, "y.npy"))
                }
            }),
        ),
        (
            format!(
                "{}-byte NPZ whose x declares (1000000, 1000000)",
                npz_trillion.len()
            ),
            Box::new(move || Form::new().part("file", file(&npz_trillion, "d.npz"))),
        ),
        (
            format!("{:.1} MB NPZ deflate bomb (4.5 GB of zeros)", mb(npz_bomb.len())),
            Box::new(move || Form::new().part("file", file(&npz_bomb, "d.npz"))),
        ),
        (
            format!(
                "{:.0} KB gzip IDX bomb (1.3 GB of zeros)",
                gz_13.len() as f64 / 1e3
            ),
            images_with(&gz_13),
        ),
        (
            format!(
                "{:.0} KB gzip IDX bomb (2.7 GB of zeros)",
                gz_26.len() as f64 / 1e3
            ),
            images_with(&gz_26),
        ),
        (
            format!(
                "{:.0} KB gzip IDX of 1,000 images + 1.3 GB more",
                gz_liar.len() as f64 / 1e3
            ),
            images_with(&gz_liar),
        ),
        (
            "300 MB name part".to_string(),
            Box::new(|| Form::new().part("name", generated(300_000_000, b'a'))),
        ),
        (
            "300 MB CSV row".to_string(),
            Box::new(move || Form::new().part("file", file(&long_row, "d.csv"))),
        ),
        (
            "60k float32 NPY named by a 250-character file name".to_string(),
            Box::new({
                let (x, y) = (npy_x.clone(), npy_y.clone());
                move || {
                    Form::new()
                        .part("x", file(&x, &format!("{}.npy", "x".repeat(246))))
                        .part("y", file(&y, "y.npy"))
                }
            }),
        ),
    ];
    for (name, form) in hostile {
        cases.push(Case {
            name,
            float32_bytes: None,
            form,
            copies: 1,
        });
    }
    Ok(cases)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let bin = std::env::current_exe()?
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("fitd"))
        .ok_or_else(|| anyhow::anyhow!("no directory above the example"))?;
    anyhow::ensure!(
        bin.exists(),
        "{} is missing; run `cargo build --release` first",
        bin.display()
    );
    let client = reqwest::Client::new();
    eprintln!("building the uploads...");
    let cases = cases()?;
    println!("| upload | status | peak RSS above idle, MB (median of {rounds}) | / float32 size |");
    println!("|---|---|---|---|");
    for case in &cases {
        let mut peaks = Vec::new();
        let mut statuses = Vec::new();
        for _ in 0..rounds {
            let forms = (0..case.copies).map(|_| (case.form)()).collect();
            let (peak, status) = measure(&bin, &client, forms).await?;
            peaks.push(peak as f64);
            statuses.push(status.iter().map(u16::to_string).collect::<Vec<_>>().join("+"));
        }
        statuses.dedup();
        let peak = median(peaks);
        let ratio = case
            .float32_bytes
            .map_or("-".to_string(), |f| format!("{:.2}x", peak / f as f64));
        println!(
            "| {} | {} | {:.1} | {ratio} |",
            case.name,
            statuses.join(" / "),
            peak / 1e6
        );
    }
    Ok(())
}
