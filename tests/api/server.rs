//! The server under hostile or unlucky conditions, driven through the real `fitd` binary: a second
//! process on the same database, leftovers of a crash mid-upload, slow-loris and idle connections.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `fitd serve` child process whose log goes to a file.
struct Fitd {
    child: Child,
    base: String,
    port: u16,
    log: PathBuf,
    client: reqwest::Client,
}

impl Fitd {
    fn command(db: &Path, port: u16, log: &Path, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fitd"));
        cmd.args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--workers", "1"])
            .arg("--db")
            .arg(db)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap());
        cmd
    }

    /// Starts the binary and waits for `/healthz`.
    async fn start(db: &Path, name: &str, extra: &[&str]) -> Fitd {
        let port = free_port();
        let log = db.parent().unwrap().join(format!("{name}.log"));
        let child = Fitd::command(db, port, &log, extra).spawn().expect("fitd starts");
        let fitd = Fitd {
            child,
            base: format!("http://127.0.0.1:{port}"),
            port,
            log,
            // Drops pooled connections before the shortest idle timeout these tests give the server.
            client: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_millis(500))
                .build()
                .unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !fitd.healthy().await {
            assert!(
                Instant::now() < deadline,
                "fitd did not come up: {}",
                fitd.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        fitd
    }

    async fn healthy(&self) -> bool {
        match self.client.get(format!("{}/healthz", self.base)).send().await {
            Ok(r) => r.status() == 200,
            Err(_) => false,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Open file descriptors of the process (sockets included).
    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn terminate(mut self) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = self.child.wait().unwrap();
        assert!(status.success(), "clean exit: {status}");
    }
}

/// Every file under `dir`, relative to it, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(root).unwrap().display().to_string());
            if path.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

async fn digits_dataset(fitd: &Fitd) -> String {
    let res = fitd
        .client
        .post(fitd.url("/v1/datasets"))
        .json(&json!({"name": "digits", "source": "digits"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_database_refuses_to_start_and_the_first_keeps_its_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fitd.db");
    let first = Fitd::start(&db, "first", &[]).await;
    let ds = digits_dataset(&first).await;

    let second = Fitd::command(&db, free_port(), &dir.path().join("second.log"), &[])
        .spawn()
        .unwrap();
    let out = tokio::task::spawn_blocking(move || second.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let log = std::fs::read_to_string(dir.path().join("second.log")).unwrap();
    assert!(!out.status.success(), "the second process must exit: {log}");
    let owner = format!(
        "another fitd process (pid {}) is serving the database {}",
        first.child.id(),
        db.display()
    );
    assert!(log.contains(&owner), "{log}");

    // The first one is unaffected and still has its data.
    assert!(first.healthy().await);
    let res = first
        .client
        .get(first.url(&format!("/v1/datasets/{ds}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // A crash releases the lock: the next start works without cleaning anything up by hand.
    first.kill();
    let third = Fitd::start(&db, "third", &[]).await;
    let res = third
        .client
        .get(third.url(&format!("/v1/datasets/{ds}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    third.terminate();
    // Nothing but the database, its lock file and the dataset.
    let mut left = files_under(dir.path());
    left.retain(|f| !f.ends_with(".log") && !f.ends_with("-wal") && !f.ends_with("-shm"));
    assert_eq!(
        left,
        [
            "fitd-data".to_string(),
            "fitd-data/datasets".into(),
            format!("fitd-data/datasets/{ds}"),
            format!("fitd-data/datasets/{ds}/x.npy"),
            format!("fitd-data/datasets/{ds}/y.npy"),
            "fitd-data/tmp".into(),
            "fitd.db".into(),
            "fitd.db.lock".into(),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_a_crash_mid_upload_are_removed_at_the_next_start_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fitd.db");
    let data = dir.path().join("fitd-data");
    let fitd = Fitd::start(&db, "first", &[]).await;
    let kept = digits_dataset(&fitd).await;

    // An upload that is still streaming when the server is killed.
    let mut sock = TcpStream::connect(("127.0.0.1", fitd.port)).await.unwrap();
    let head = "--XyZ\r\nContent-Disposition: form-data; name=\"images\"; filename=\"x.idx\"\r\n\r\n";
    let request = format!(
        "POST /v1/datasets HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=XyZ\r\n\
         Content-Length: 100000000\r\n\r\n{head}"
    );
    sock.write_all(request.as_bytes()).await.unwrap();
    sock.write_all(&vec![7u8; 1 << 20]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(data.join("tmp")).unwrap().count() == 0 {
        assert!(
            Instant::now() < deadline,
            "the upload never reached a temporary file"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fitd.kill();
    drop(sock);
    let upload_tmp: Vec<PathBuf> = std::fs::read_dir(data.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        upload_tmp
            .iter()
            .all(|p| p.file_name().unwrap().to_str().unwrap().starts_with(".tmp")),
        "{upload_tmp:?}"
    );
    // What a crash between writing arrays and inserting the row leaves: a scratch directory, and a
    // dataset directory that no row names.
    let partial = data.join("tmp/0193f1e2-0000-7000-8000-000000000001.partial");
    let orphan = data.join("datasets/0193f1e2-0000-7000-8000-000000000002");
    for d in [&partial, &orphan] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("x.npy"), vec![0u8; 4096]).unwrap();
    }

    let fitd = Fitd::start(&db, "second", &[]).await;
    assert!(fitd.healthy().await);
    let log = fitd.log_text();
    for p in upload_tmp.iter().chain([&partial, &orphan]) {
        assert!(!p.exists(), "{} survived the restart", p.display());
        assert!(
            log.contains(&p.display().to_string()),
            "the log names {}: {log}",
            p.display()
        );
    }
    assert!(log.contains("swept leftovers of interrupted uploads"), "{log}");
    assert_eq!(std::fs::read_dir(data.join("tmp")).unwrap().count(), 0);
    let datasets: Vec<String> = std::fs::read_dir(data.join("datasets"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        datasets,
        std::slice::from_ref(&kept),
        "the dataset with a row is kept"
    );
    let res = fitd
        .client
        .get(fitd.url(&format!("/v1/datasets/{kept}/samples/3.png")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "its arrays still load");
    fitd.terminate();
}

/// A slow-loris client: a request head that never ends, one header line at a time. Returns the bytes
/// the server sent and whether it closed the connection.
async fn slow_loris(port: u16, every: Duration, give_up: Duration) -> (Vec<u8>, bool) {
    let Ok(mut sock) = TcpStream::connect(("127.0.0.1", port)).await else {
        return (Vec::new(), true);
    };
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    if sock
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .is_err()
    {
        return (got, true);
    }
    while started.elapsed() < give_up {
        tokio::select! {
            n = sock.read(&mut buf) => match n {
                Ok(0) | Err(_) => return (got, true),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            },
            _ = tokio::time::sleep(every) => {
                if sock.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    return (got, true);
                }
            }
        }
    }
    (got, false)
}

/// Waits until the server closes `sock` (read returns end of file or an error), up to `limit`.
async fn closed_by_server(sock: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let read_to_end = async {
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read_to_end).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_connections_are_closed_and_never_lock_out_a_normal_client() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fitd.db");
    let limit = 20;
    let fitd = Fitd::start(
        &db,
        "fitd",
        &[
            "--max-connections",
            &limit.to_string(),
            "--header-read-timeout-secs",
            "2",
            "--idle-timeout-secs",
            "1",
        ],
    )
    .await;
    let idle_fds = fitd.open_fds();

    // 200 clients that each trickle a header line every 100 ms and would go on for a minute.
    let port = fitd.port;
    let lorises: Vec<_> = (0..200)
        .map(|_| {
            tokio::spawn(slow_loris(
                port,
                Duration::from_millis(100),
                Duration::from_secs(60),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let busy_fds = fitd.open_fds();
    assert!(
        busy_fds <= idle_fds + limit + 1,
        "the server holds {busy_fds} descriptors, {idle_fds} when idle; at most {limit} connections (+1 waiting for a slot)"
    );

    // A normal client is served while the attack goes on.
    for _ in 0..5 {
        let res = tokio::time::timeout(
            Duration::from_secs(10),
            fitd.client.get(fitd.url("/healthz")).send(),
        )
        .await
        .expect("a normal client is served during the attack")
        .unwrap();
        assert_eq!(res.status(), 200);
    }

    // Every slow client was disconnected without an answer, long before it would have given up.
    for l in lorises {
        let (got, closed) = tokio::time::timeout(Duration::from_secs(30), l)
            .await
            .expect("closed well before the client's minute")
            .unwrap();
        assert!(closed);
        assert!(
            !String::from_utf8_lossy(&got).contains("200 OK"),
            "a slow head was never answered"
        );
    }
    assert!(fitd.healthy().await);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fitd.open_fds() > idle_fds + 1 {
        assert!(
            Instant::now() < deadline,
            "sockets are released: {} open",
            fitd.open_fds()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fitd.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_connections_are_closed_but_busy_ones_and_event_streams_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fitd.db");
    let fitd = Fitd::start(
        &db,
        "fitd",
        &["--header-read-timeout-secs", "1", "--idle-timeout-secs", "1"],
    )
    .await;
    let port = fitd.port;

    // Connects and never sends a byte.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert!(closed_by_server(&mut silent, Duration::from_secs(10)).await);

    // One request, then nothing: closed once idle.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(closed_by_server(&mut idle, Duration::from_secs(10)).await);

    // A keep-alive client that sends a request every 300 ms keeps its connection well past 1 s.
    let mut steady = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    for _ in 0..10 {
        steady
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let n = steady.read(&mut buf).await.unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
            "the connection is still served"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // An event stream on a queued job sends nothing for seconds, and stays open.
    let ds = digits_dataset(&fitd).await;
    let model: Value = fitd
        .client
        .post(fitd.url("/v1/models"))
        .json(&json!({"name": "m", "input_shape": [64], "layers": [
            {"type": "dense", "units": 10, "activation": "softmax"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job = |epochs: u32| {
        json!({"model_id": model["id"], "dataset_id": ds,
               "compile": {"optimizer": "adam", "loss": "sparse_categorical_crossentropy"},
               "fit": {"epochs": epochs, "batch_size": 32, "seed": 1}})
    };
    let post_job = |body: Value| {
        let req = fitd.client.post(fitd.url("/v1/jobs")).json(&body);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    // Holds the only worker, so the watched job stays queued.
    let blocker = post_job(job(100_000)).await;
    let watched = post_job(job(1)).await;
    let mut stream = fitd
        .client
        .get(fitd.url(&format!("/v1/jobs/{}/events", watched["id"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    let first = stream.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("event: status"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    fitd.client
        .post(fitd.url(&format!("/v1/jobs/{}/cancel", blocker["id"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    let mut rest = String::new();
    let read_all = async {
        while let Some(chunk) = stream.chunk().await.unwrap() {
            rest.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read_all)
        .await
        .expect("the stream ends after done");
    assert!(
        rest.contains("event: done"),
        "the stream outlived 3 idle timeouts: {rest}"
    );
    assert!(fitd.healthy().await);
    fitd.terminate();
}
