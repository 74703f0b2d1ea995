//! Spawns the real application for a test and talks to it over HTTP.

use std::path::PathBuf;

use fitd::config::Config;
use fitd::startup::Application;
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server with its own temporary database directory.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub config: Config,
    /// Kept alive for the test's duration; deleted on drop.
    pub dir: std::sync::Arc<TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

/// A server with default settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A server whose settings `tweak` may change (limits, mirror URLs, digests).
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("temporary directory"));
    let mut config = Config::for_tests(dir.path().join("fitd.db"));
    tweak(&mut config);
    start(config, dir).await
}

async fn start(config: Config, dir: std::sync::Arc<TempDir>) -> TestApp {
    let app = Application::build(config.clone())
        .await
        .expect("the application builds");
    let port = app.port();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
        config,
        dir,
        shutdown: Some(tx),
        handle: Some(handle),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn db_path(&self) -> PathBuf {
        self.config.db.clone()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.client
            .delete(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Stops the server gracefully and starts a new one on the same database.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        let mut config = self.config.clone();
        config.addr = "127.0.0.1:0".parse().unwrap();
        start(config, self.dir.clone()).await
    }

    /// Graceful shutdown; waits until the server has closed its database.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle
                .await
                .expect("server task")
                .expect("server stopped cleanly");
        }
    }
}

/// Asserts that `res` is a problem+json with `status`, returning the problem.
pub async fn assert_problem(res: reqwest::Response, status: u16) -> Value {
    let got = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = res.text().await.expect("body");
    assert_eq!(got, status, "unexpected status; body: {text}");
    assert!(
        ct.starts_with("application/problem+json"),
        "content type {ct:?}, body {text}"
    );
    let problem: Value = serde_json::from_str(&text).expect("problem body is JSON");
    assert_eq!(problem["status"], status, "{problem}");
    for key in ["type", "title", "detail"] {
        assert!(problem[key].is_string(), "problem lacks {key}: {problem}");
    }
    problem
}

/// The `field` values of a problem's `errors`.
pub fn error_fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["field"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The spec of the book's Fashion-MNIST MLP.
pub fn book_model() -> Value {
    serde_json::json!({
        "name": "fashion-mlp",
        "input_shape": [28, 28],
        "layers": [
            {"type": "flatten"},
            {"type": "dense", "units": 100, "activation": "relu"},
            {"type": "dropout", "rate": 0.3},
            {"type": "dense", "units": 10, "activation": "softmax"}
        ]
    })
}

/// Makes sure `python3` can import `modules`, installing `packages` with pip when it cannot (as
/// `e2e/run.sh` does for Chromium), so `cargo test` runs the Python checks on a fresh machine too.
pub fn python_with(modules: &[&str], packages: &[&str]) {
    let import = format!("import {}", modules.join(", "));
    let have = || {
        std::process::Command::new("python3")
            .args(["-c", &import])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !have() {
        let pip = |extra: &[&str]| {
            std::process::Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
                .args(extra)
                .args(packages)
                .status()
                .is_ok_and(|s| s.success())
        };
        let _ = pip(&[]) || pip(&["--break-system-packages"]);
    }
    assert!(
        have(),
        "python3 with {modules:?} is required (pip install {})",
        packages.join(" ")
    );
}

/// Runs a script of `tests/python/` with `args`; fails the test with its output unless it succeeds.
pub fn run_python(script: &str, args: &[&std::ffi::OsStr]) {
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Shown with `cargo test -- --nocapture`.
    print!("{script}: {}", String::from_utf8_lossy(&out.stdout));
}
