//! A cluster of real `fitd` processes on one PostgreSQL database: API nodes (`serve --workers 0`)
//! and worker nodes (`fitd worker`), each with its own data directory, sharing nothing but the
//! database. These tests run when `FITD_TEST_POSTGRES` names a server (as `.ci/run` does).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::jobs::{
    Ev, Http, Remote, digits_dataset, digits_model, job_body, read_events, submit, wait_until,
};
use super::support::{postgres_url, test_db};

/// Seconds a claim holds without renewal in these clusters.
const LEASE_SECS: u64 = 2;

/// One node: an API or a worker process with its log in the test's directory.
struct Node {
    child: Child,
    name: String,
    remote: Remote,
    log: PathBuf,
}

impl Node {
    /// `serve --workers 0` (an API node) or `worker --workers 1`; waits for `/healthz`.
    async fn start(dir: &Path, db: &str, name: &str, api: bool) -> Node {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join(format!("{name}.log"));
        let (role, workers) = if api { ("serve", "0") } else { ("worker", "1") };
        let child = Command::new(env!("CARGO_BIN_EXE_fitd"))
            .args([role, "--addr", &format!("127.0.0.1:{port}"), "--workers", workers])
            .args(["--db", db, "--node-name", name])
            .args(["--job-lease-secs", &LEASE_SECS.to_string()])
            .arg("--data-dir")
            .arg(dir.join(format!("{name}-data")))
            .env("RUST_LOG", "info,sqlx=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("fitd starts");
        let node = Node {
            child,
            name: name.to_string(),
            remote: Remote::new(format!("http://127.0.0.1:{port}")),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = node.remote.client().get(node.remote.url("/healthz")).send().await
                && r.status() == 200
            {
                return node;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not come up: {}",
                node.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {}", self.name);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The database URL of a fresh test database, or `None` (the test is skipped) without PostgreSQL.
async fn cluster_db(dir: &Path) -> Option<String> {
    if postgres_url().is_none() {
        eprintln!("skipped: set FITD_TEST_POSTGRES to run the cluster tests");
        return None;
    }
    Some(test_db(dir).await.to_url())
}

async fn job(node: &Remote, id: &str) -> Value {
    node.get(&format!("/v1/jobs/{id}")).await.json().await.unwrap()
}

async fn weights(node: &Remote, saved_model_id: &str) -> Vec<u8> {
    let res = node
        .get(&format!("/v1/saved-models/{saved_model_id}/weights"))
        .await;
    assert_eq!(res.status(), 200);
    res.bytes().await.unwrap().to_vec()
}

fn finished(j: &Value) -> bool {
    matches!(j["status"].as_str(), Some("succeeded" | "failed" | "cancelled"))
}

/// A job of `epochs` epochs at batch size 1, slow enough to be caught mid-way.
fn long_body(model: &str, ds: &str, epochs: u32) -> Value {
    let mut b = job_body(model, ds, epochs);
    b["fit"]["batch_size"] = json!(1);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_nodes_and_three_workers_run_each_job_once_stream_across_nodes_and_cancel_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = cluster_db(dir.path()).await else {
        return;
    };
    // The first node applies the migrations; the others start together.
    let a = Node::start(dir.path(), &db, "api-a", true).await;
    let (b, w1, w2, w3) = tokio::join!(
        Node::start(dir.path(), &db, "api-b", true),
        Node::start(dir.path(), &db, "worker-1", false),
        Node::start(dir.path(), &db, "worker-2", false),
        Node::start(dir.path(), &db, "worker-3", false),
    );
    // A dataset uploaded through one node and a model created through the other: workers fetch
    // the dataset's files from the database.
    let ds = digits_dataset(&a.remote).await;
    let model = digits_model(&b.remote, 16).await;

    let mut ids = Vec::new();
    for i in 0..40 {
        let node = if i % 2 == 0 { &a.remote } else { &b.remote };
        let mut body = job_body(&model, &ds, 1);
        body["fit"]["batch_size"] = json!(128);
        ids.push(submit(node, &body).await["id"].as_str().unwrap().to_string());
    }
    let mut workers = std::collections::BTreeSet::new();
    for id in &ids {
        let j = wait_until(&b.remote, id, 180, finished).await;
        assert_eq!(j["status"], "succeeded", "{j}");
        assert_eq!(j["attempts"], 1, "each job runs exactly once: {j}");
        workers.insert(j["worker"].as_str().unwrap().to_string());
        // One claim, one start: a single `running` status in the job's log.
        let events = read_events(&a.remote, id, None, 1000).await;
        let running = events
            .iter()
            .filter(|e| e.event == "status" && e.data["status"] == "running")
            .count();
        assert_eq!(running, 1, "{id}: {events:?}");
    }
    assert!(
        workers.len() >= 2,
        "the jobs were spread over the workers: {workers:?}"
    );
    assert!(workers.iter().all(|w| w.starts_with("worker-")), "{workers:?}");

    // SSE on node A for a job that runs on a worker and was submitted through node B; the client
    // reconnects with Last-Event-ID halfway and gets every event exactly once.
    let epochs = 6;
    let id = submit(&b.remote, &long_body(&model, &ds, epochs)).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let first = read_events(&a.remote, &id, None, 5).await;
    let first: Vec<Ev> = first.into_iter().filter(|e| e.event != "progress").collect();
    let last_id = first.last().unwrap().id;
    let rest = read_events(&a.remote, &id, Some(last_id), 10_000).await;
    let mut all: Vec<Ev> = first;
    all.extend(rest.into_iter().filter(|e| e.event != "progress"));
    let seqs: Vec<i64> = all.iter().map(|e| e.id).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "every stored event once, in order: {all:?}"
    );
    let epochs_seen: Vec<i64> = all
        .iter()
        .filter(|e| e.event == "epoch")
        .map(|e| e.data["epoch"].as_i64().unwrap())
        .collect();
    assert_eq!(epochs_seen, (0..epochs as i64).collect::<Vec<_>>());
    assert_eq!(all.last().unwrap().event, "done");

    // Cancel through node A reaches the worker running the job, wherever it is.
    let id = submit(&b.remote, &long_body(&model, &ds, 200)).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let running = wait_until(&a.remote, &id, 60, |j| j["status"] == "running").await;
    assert!(running["worker"].as_str().unwrap().starts_with("worker-"));
    let res = a
        .remote
        .client()
        .post(a.remote.url(&format!("/v1/jobs/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    let asked = Instant::now();
    let j = wait_until(&b.remote, &id, 30, finished).await;
    assert_eq!(j["status"], "cancelled", "{j}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "the cancel took {:?} to stop the job",
        asked.elapsed()
    );
    drop((w1, w2, w3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_worker_is_replaced_after_its_lease_and_a_frozen_one_cannot_write_when_it_wakes() {
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = cluster_db(dir.path()).await else {
        return;
    };
    let api = Node::start(dir.path(), &db, "api", true).await;
    let w1 = Node::start(dir.path(), &db, "worker-1", false).await;
    let ds = digits_dataset(&api.remote).await;
    let model = digits_model(&api.remote, 32).await;
    let epochs = 10;
    let body = long_body(&model, &ds, epochs);

    // The uninterrupted run the others must match, bit for bit.
    let reference = submit(&api.remote, &body).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let reference = wait_until(&api.remote, &reference, 300, finished).await;
    assert_eq!(reference["status"], "succeeded", "{reference}");
    let expected = weights(&api.remote, reference["saved_model_id"].as_str().unwrap()).await;

    // SIGKILL the worker at epoch 3 of 10: another worker takes the job over once the lease
    // expires and resumes it from its latest checkpoint.
    let killed = submit(&api.remote, &body).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_until(&api.remote, &killed, 120, |j| {
        j["epoch"].as_i64().is_some_and(|e| e >= 2)
    })
    .await;
    let mut w1 = w1;
    w1.child.kill().unwrap();
    w1.child.wait().unwrap();
    let w2 = Node::start(dir.path(), &db, "worker-2", false).await;
    let j = wait_until(&api.remote, &killed, 300, finished).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_eq!(j["attempts"], 2, "{j}");
    assert_eq!(j["worker"], "worker-2/0", "{j}");
    assert!(
        weights(&api.remote, j["saved_model_id"].as_str().unwrap()).await == expected,
        "the resumed run's weights are byte-identical to the uninterrupted run's"
    );

    // SIGSTOP a worker past its lease; another finishes the job; SIGCONT the first: its late
    // writes are refused and the result stays the other worker's.
    let frozen = submit(&api.remote, &body).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_until(&api.remote, &frozen, 120, |j| {
        j["epoch"].as_i64().is_some_and(|e| e >= 1)
    })
    .await;
    w2.signal("STOP");
    let w3 = Node::start(dir.path(), &db, "worker-3", false).await;
    let j = wait_until(&api.remote, &frozen, 300, finished).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_eq!(j["worker"], "worker-3/0", "{j}");
    let events_before = read_events(&api.remote, &frozen, None, 10_000).await.len();
    w2.signal("CONT");
    // The woken worker finishes its batch and epoch and tries to store them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !w2.log_text().contains("passed to another worker") {
        assert!(
            Instant::now() < deadline,
            "worker-2 never noticed: {}",
            w2.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = job(&api.remote, &frozen).await;
    assert_eq!(after["status"], "succeeded");
    assert_eq!(after["saved_model_id"], j["saved_model_id"]);
    assert_eq!(after["attempts"], j["attempts"]);
    assert_eq!(
        read_events(&api.remote, &frozen, None, 10_000).await.len(),
        events_before,
        "the stale worker wrote no event"
    );
    let history: Value = api
        .remote
        .get(&format!("/v1/jobs/{frozen}/history"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(history["epoch"], json!((0..epochs).collect::<Vec<_>>()));
    assert!(
        weights(&api.remote, j["saved_model_id"].as_str().unwrap()).await == expected,
        "the taken-over run's weights are byte-identical too"
    );
    drop(w3);
}

/// Follows a job's event stream on `node` until `done`, reconnecting with `Last-Event-ID` as a
/// browser's EventSource does whenever the stream ends early or the request fails.
async fn follow_to_done(node: &Remote, id: &str) -> Vec<Ev> {
    let mut all: Vec<Ev> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(Instant::now() < deadline, "no done event: {all:?}");
        let last = all.iter().rev().find(|e| e.event != "progress").map(|e| e.id);
        let mut req = node.client().get(node.url(&format!("/v1/jobs/{id}/events")));
        if let Some(l) = last {
            req = req.header("Last-Event-ID", l.to_string());
        }
        let Ok(res) = req.send().await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if res.status() != 200 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        use eventsource_stream::Eventsource;
        use futures_util::StreamExt;
        let mut stream = res.bytes_stream().eventsource();
        while let Some(Ok(ev)) = stream.next().await {
            let ev = Ev {
                id: ev.id.parse().unwrap(),
                event: ev.event,
                data: serde_json::from_str(&ev.data).unwrap(),
            };
            let done = ev.event == "done";
            all.push(ev);
            if done {
                return all.into_iter().filter(|e| e.event != "progress").collect();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the PostgreSQL server; .ci/run runs it on its own after the suites"]
async fn restarting_postgres_under_a_running_cluster_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = cluster_db(dir.path()).await else {
        return;
    };
    let restart = std::env::var("FITD_TEST_PG_RESTART")
        .expect("FITD_TEST_PG_RESTART: the shell command that restarts the PostgreSQL server");
    let api = Node::start(dir.path(), &db, "api", true).await;
    let _worker = Node::start(dir.path(), &db, "worker-1", false).await;
    let ds = digits_dataset(&api.remote).await;
    let model = digits_model(&api.remote, 32).await;
    let epochs = 8;
    let id = submit(&api.remote, &long_body(&model, &ds, epochs)).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let follower = {
        let remote = Remote::new(api.remote.base().to_string());
        let id = id.clone();
        tokio::spawn(async move { follow_to_done(&remote, &id).await })
    };
    wait_until(&api.remote, &id, 120, |j| {
        j["epoch"].as_i64().is_some_and(|e| e >= 1)
    })
    .await;
    let status = Command::new("sh").args(["-c", &restart]).status().unwrap();
    assert!(status.success(), "{restart}");

    // The worker retries its writes until the database is back; the API reconnects its pool and
    // its LISTEN connection.
    let deadline = Instant::now() + Duration::from_secs(300);
    let j = loop {
        if let Ok(r) = api
            .remote
            .client()
            .get(api.remote.url(&format!("/v1/jobs/{id}")))
            .send()
            .await
            && r.status() == 200
        {
            let j: Value = r.json().await.unwrap();
            if finished(&j) {
                break j;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the job did not finish: {}",
            api.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(j["status"], "succeeded", "{j}");
    let history: Value = api
        .remote
        .get(&format!("/v1/jobs/{id}/history"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(history["epoch"], json!((0..epochs).collect::<Vec<_>>()));
    let events = tokio::time::timeout(Duration::from_secs(60), follower)
        .await
        .expect("the stream ends")
        .unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.id).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "{events:?}");
    let epochs_seen: Vec<i64> = events
        .iter()
        .filter(|e| e.event == "epoch")
        .map(|e| e.data["epoch"].as_i64().unwrap())
        .collect();
    assert_eq!(epochs_seen, (0..epochs as i64).collect::<Vec<_>>());
}
