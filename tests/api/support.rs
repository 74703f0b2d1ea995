//! Spawns the real application for a test and talks to it over HTTP.

use std::path::PathBuf;

use fitd::config::Config;
use fitd::startup::Application;
use fitd::store::Db;
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
    let mut config = Config::for_tests(test_db(dir.path()).await);
    config.data_dir = data_dir_for(&config.db, dir.path());
    tweak(&mut config);
    start(config, dir).await
}

/// The PostgreSQL server the tests run against instead of SQLite, when `FITD_TEST_POSTGRES` holds
/// its URL (a database on it the test user may connect to, e.g.
/// `postgres://postgres:fitd@127.0.0.1/postgres`); `.ci/run` runs the API suite both ways.
pub fn postgres_url() -> Option<String> {
    std::env::var("FITD_TEST_POSTGRES").ok().filter(|u| !u.is_empty())
}

/// A fresh, empty database for one test: `<dir>/fitd.db`, or a new PostgreSQL database on the
/// `FITD_TEST_POSTGRES` server.
pub async fn test_db(dir: &std::path::Path) -> Db {
    let Some(admin) = postgres_url() else {
        return Db::Sqlite(dir.join("fitd.db"));
    };
    fitd::store::backend::create_postgres_database(&admin, "fitd_test")
        .await
        .expect("creating a test database on FITD_TEST_POSTGRES")
}

/// The node's file directory: next to a SQLite file (the default), or inside the test's directory
/// with PostgreSQL.
pub fn data_dir_for(db: &Db, dir: &std::path::Path) -> Option<PathBuf> {
    match db {
        Db::Sqlite(_) => None,
        Db::Postgres(_) => Some(dir.join("fitd-data")),
    }
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

    /// The server's database.
    pub fn db(&self) -> Db {
        self.config.db.clone()
    }

    /// A second connection to the server's database, as `fitd token` or another node opens it.
    pub async fn open_store(&self) -> fitd::store::Store {
        fitd::store::Store::open(&self.config.db, self.config.data_dir.as_deref())
            .await
            .expect("opening the server's database")
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

/// The served OpenAPI document as JSON.
pub fn spec() -> Value {
    serde_json::to_value(fitd::http::openapi()).expect("the spec serializes")
}

/// Asserts that `value` matches the spec's schema `name` (`components/schemas/<name>`), with the
/// JSON Schema keywords the spec uses: `type` (also a list, with `null`), `enum`, `properties`,
/// `required`, `items`, `oneOf`/`anyOf`/`allOf`, `$ref`, `minimum`/`maximum` and the exclusive ones.
pub fn assert_matches_schema(value: &Value, name: &str) {
    let spec = spec();
    let schema = serde_json::json!({"$ref": format!("#/components/schemas/{name}")});
    let mut errors = Vec::new();
    check_schema(&spec, &schema, value, "$", &mut errors);
    assert!(
        errors.is_empty(),
        "{value} does not match schema {name}:\n{}",
        errors.join("\n")
    );
}

/// Asserts that the JSON body of a response with `status` to `method path` (the spec's path
/// template) matches what the spec documents for it.
pub fn assert_matches_response(value: &Value, method: &str, path: &str, status: u16) {
    let spec = spec();
    let op = &spec["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not in the spec");
    let res = &op["responses"][status.to_string()];
    assert!(
        res.is_object(),
        "{method} {path} answered {status}, which the spec does not document"
    );
    let content = res["content"].as_object().expect("the response has content");
    let schema = content
        .iter()
        .find(|(ct, _)| ct.contains("json"))
        .map(|(_, c)| c["schema"].clone())
        .expect("a JSON response");
    let mut errors = Vec::new();
    check_schema(&spec, &schema, value, "$", &mut errors);
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: {value} does not match the spec:\n{}",
        errors.join("\n")
    );
}

fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r
                .strip_prefix("#/components/schemas/")
                .expect("a local schema reference");
            let target = &spec["components"]["schemas"][name];
            assert!(target.is_object(), "dangling reference {r}");
            resolve(spec, target)
        }
        None => schema,
    }
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        other => panic!("unknown type {other} in the spec"),
    }
}

fn check_schema(spec: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(spec, schema);
    if let Some(t) = schema.get("type") {
        let ok = match t {
            Value::String(t) => type_matches(t, v),
            Value::Array(ts) => ts.iter().any(|t| type_matches(t.as_str().unwrap(), v)),
            _ => true,
        };
        if !ok {
            errors.push(format!("{at}: {v} is not of type {t}"));
            return;
        }
    }
    if let Some(values) = schema["enum"].as_array()
        && !values.contains(v)
    {
        errors.push(format!("{at}: {v} is not one of {values:?}"));
    }
    if let Some(x) = v.as_f64() {
        let bound = |k: &str| schema[k].as_f64();
        if bound("minimum").is_some_and(|m| x < m)
            || bound("maximum").is_some_and(|m| x > m)
            || bound("exclusiveMinimum").is_some_and(|m| x <= m)
            || bound("exclusiveMaximum").is_some_and(|m| x >= m)
        {
            errors.push(format!("{at}: {x} is out of the schema's range"));
        }
    }
    if let Some(obj) = v.as_object() {
        for r in schema["required"].as_array().into_iter().flatten() {
            let r = r.as_str().unwrap();
            if !obj.contains_key(r) {
                errors.push(format!("{at}: lacks required field {r}"));
            }
        }
        if let Some(props) = schema["properties"].as_object() {
            for (k, sub) in obj {
                match props.get(k) {
                    Some(p) => check_schema(spec, p, sub, &format!("{at}.{k}"), errors),
                    // A field the server sends must be documented.
                    None => errors.push(format!("{at}: field {k} is not in the schema")),
                }
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, item) in arr.iter().enumerate() {
            check_schema(spec, items, item, &format!("{at}[{i}]"), errors);
        }
    }
    for all in schema["allOf"].as_array().into_iter().flatten() {
        check_schema(spec, all, v, at, errors);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(variants) = schema[key].as_array() {
            let matching = variants
                .iter()
                .filter(|s| {
                    let mut e = Vec::new();
                    check_schema(spec, s, v, at, &mut e);
                    e.is_empty()
                })
                .count();
            let ok = if key == "oneOf" {
                matching >= 1
            } else {
                matching > 0
            };
            if !ok {
                errors.push(format!("{at}: {v} matches none of the {key} variants"));
            }
        }
    }
}
