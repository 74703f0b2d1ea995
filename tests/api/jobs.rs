//! `/v1/jobs`: validation, runs to success with History, checkpoints and a saved model, SSE with
//! replay, cancel, the worker pool's FIFO order, failures that leave the server healthy, early
//! stopping, and resume after the process is killed.

use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::support::{TestApp, assert_problem, error_fields, spawn_app, spawn_app_with, test_db};

/// What the helpers need of a server: the in-process one, or the real binary in a child process.
pub trait Http {
    fn base(&self) -> &str;
    fn client(&self) -> &reqwest::Client;
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }
    async fn get(&self, path: &str) -> reqwest::Response {
        self.client()
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }
    async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client()
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }
}

impl Http for TestApp {
    fn base(&self) -> &str {
        &self.base
    }
    fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

/// A `fitd` process started from the built binary.
pub struct Remote {
    base: String,
    client: reqwest::Client,
}

impl Remote {
    /// A client of the server at `base` (`http://127.0.0.1:<port>`).
    pub fn new(base: String) -> Remote {
        Remote {
            base,
            client: reqwest::Client::new(),
        }
    }
}

impl Http for Remote {
    fn base(&self) -> &str {
        &self.base
    }
    fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

pub async fn digits_dataset(app: &impl Http) -> String {
    let res = app
        .post_json("/v1/datasets", &json!({"name": "digits", "source": "digits"}))
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

pub async fn digits_model(app: &impl Http, hidden: u32) -> String {
    let res = app
        .post_json(
            "/v1/models",
            &json!({"name": "digits-mlp", "input_shape": [64], "layers": [
                {"type": "rescaling", "scale": 0.0625},
                {"type": "dense", "units": hidden, "activation": "relu"},
                {"type": "dropout", "rate": 0.2},
                {"type": "dense", "units": 10, "activation": "softmax"}]}),
        )
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// sklearn's diabetes regression data (10 scaled features, targets 25-346) and a linear model for
/// it: with a large learning rate its loss overflows within an epoch.
pub async fn diabetes_regression(app: &impl Http) -> (String, String) {
    let res = app
        .post_json("/v1/datasets", &json!({"name": "diabetes", "source": "diabetes"}))
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let ds = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let res = app
        .post_json(
            "/v1/models",
            &json!({"name": "linear", "input_shape": [10], "layers": [{"type": "dense", "units": 1}]}),
        )
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let model = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    (ds, model)
}

/// A job whose loss overflows: plain SGD at learning rate 1000 on [`diabetes_regression`].
pub fn diverging_body(model: &str, dataset: &str, epochs: u32) -> Value {
    json!({"model_id": model, "dataset_id": dataset,
           "compile": {"optimizer": {"type": "sgd", "learning_rate": 1000.0}, "loss": "mse"},
           "fit": {"epochs": epochs, "batch_size": 32, "seed": 3}})
}

pub fn job_body(model: &str, dataset: &str, epochs: u32) -> Value {
    json!({"model_id": model, "dataset_id": dataset,
           "validation": {"split": 0.2},
           "compile": {"optimizer": {"type": "adam", "learning_rate": 0.001},
                       "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
           "fit": {"epochs": epochs, "batch_size": 32, "seed": 7}})
}

pub async fn submit(app: &impl Http, body: &Value) -> Value {
    let res = app.post_json("/v1/jobs", body).await;
    let status = res.status();
    let location = res
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    let job: Value = res.json().await.unwrap();
    assert_eq!(status, 202, "{job}");
    assert_eq!(
        location.unwrap(),
        format!("/v1/jobs/{}", job["id"].as_str().unwrap())
    );
    job
}

/// Polls the job until `done` says so.
pub async fn wait_until(app: &impl Http, id: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let job: Value = app.get(&format!("/v1/jobs/{id}")).await.json().await.unwrap();
        if done(&job) {
            return job;
        }
        assert!(Instant::now() < deadline, "timed out waiting; job is {job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn wait_finished(app: &impl Http, id: &str) -> Value {
    wait_until(app, id, 120, |j| {
        matches!(j["status"].as_str(), Some("succeeded" | "failed" | "cancelled"))
    })
    .await
}

/// One SSE event: id, name, JSON data.
#[derive(Debug, Clone)]
pub struct Ev {
    pub id: i64,
    pub event: String,
    pub data: Value,
}

/// Reads a job's event stream until the server ends it (or `limit` events arrived).
pub async fn read_events(app: &impl Http, id: &str, last_event_id: Option<i64>, limit: usize) -> Vec<Ev> {
    let mut req = app.client().get(app.url(&format!("/v1/jobs/{id}/events")));
    if let Some(l) = last_event_id {
        req = req.header("Last-Event-ID", l.to_string());
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut stream = res.bytes_stream().eventsource();
    let mut out = Vec::new();
    let read = async {
        while let Some(ev) = stream.next().await {
            let ev = ev.expect("well-formed event");
            out.push(Ev {
                id: ev.id.parse().expect("numeric event id"),
                event: ev.event,
                data: serde_json::from_str(&ev.data).expect("JSON data"),
            });
            if out.len() >= limit {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .expect("the stream ends");
    out
}

fn persisted(events: &[Ev]) -> Vec<&Ev> {
    events.iter().filter(|e| e.event != "progress").collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_job_returns_404_for_unknown_model_dataset_or_weights() {
    let app = spawn_app().await;
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 16).await;
    let p = assert_problem(app.post_json("/v1/jobs", &job_body("nope", &ds, 1)).await, 404).await;
    assert!(p["detail"].as_str().unwrap().contains("model"), "{p}");
    let p = assert_problem(app.post_json("/v1/jobs", &job_body(&model, "nope", 1)).await, 404).await;
    assert!(p["detail"].as_str().unwrap().contains("dataset"), "{p}");
    let mut body = job_body(&model, &ds, 1);
    body["initial_weights"] = json!("nope");
    assert_problem(app.post_json("/v1/jobs", &body).await, 404).await;
    body["initial_weights"] = Value::Null;
    body["validation"] = json!({"dataset_id": "nope"});
    assert_problem(app.post_json("/v1/jobs", &body).await, 404).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_job_names_every_invalid_field() {
    let app = spawn_app().await;
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 16).await;
    let body = json!({"model_id": model, "dataset_id": ds,
        "validation": {"split": 1.0},
        "compile": {"optimizer": {"type": "sgd", "learning_rate": 0, "momentum": 1.5},
                    "loss": "sparse_categorical_crossentropy"},
        "fit": {"epochs": 0, "batch_size": 0},
        "callbacks": [{"type": "early_stopping", "monitor": "val_accuracy"}]});
    let p = assert_problem(app.post_json("/v1/jobs", &body).await, 422).await;
    assert_eq!(
        error_fields(&p),
        [
            "validation.split",
            "compile.optimizer.learning_rate",
            "compile.optimizer.momentum",
            "fit.epochs",
            "fit.batch_size",
            "callbacks[0].monitor"
        ]
    );
    // The engine-facing checks: loss vs output layer, input width vs dataset.
    let mut body = job_body(&model, &ds, 1);
    body["compile"]["loss"] = json!("binary_crossentropy");
    let p = assert_problem(app.post_json("/v1/jobs", &body).await, 422).await;
    assert_eq!(error_fields(&p), ["compile.loss"]);
    let wide = app
        .post_json(
            "/v1/models",
            &json!({"name": "wide", "input_shape": [28, 28], "layers": [
            {"type": "flatten"}, {"type": "dense", "units": 10, "activation": "softmax"}]}),
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    let p = assert_problem(
        app.post_json("/v1/jobs", &job_body(wide["id"].as_str().unwrap(), &ds, 1))
            .await,
        422,
    )
    .await;
    assert_eq!(error_fields(&p), ["dataset_id"]);
    assert!(
        p["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("64 features"),
        "{p}"
    );
    // Nothing was queued by any of these.
    let jobs: Value = app.get("/v1/jobs").await.json().await.unwrap();
    assert_eq!(jobs["items"].as_array().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_to_success_with_history_checkpoints_and_a_saved_model() {
    let app = spawn_app().await;
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 32).await;
    let mut body = job_body(&model, &ds, 4);
    body["callbacks"] =
        json!([{"type": "model_checkpoint", "monitor": "val_accuracy", "save_best_only": true}]);
    let job = submit(&app, &body).await;
    assert_eq!(job["status"], "queued");
    assert_eq!(job["epochs"], 4);
    assert_eq!(job["request"]["fit"]["seed"], 7);
    let id = job["id"].as_str().unwrap();
    let job = wait_finished(&app, id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["stop_reason"], "completed");
    assert_eq!(job["epoch"], 3);
    assert_eq!(job["progress"]["batches_done"], job["progress"]["batches_total"]);
    assert_eq!(job["progress"]["batches_total"], 45); // ceil(1437 / 32)
    assert!(job["saved_model_id"].is_string());
    assert!(job["started_at"].is_string() && job["finished_at"].is_string());

    let res = app.get(&format!("/v1/jobs/{id}/history")).await;
    assert_eq!(res.status(), 200);
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    let h: Value = res.json().await.unwrap();
    assert_eq!(h["epoch"], json!([0, 1, 2, 3]));
    for key in ["loss", "accuracy", "val_loss", "val_accuracy"] {
        assert_eq!(h["history"][key].as_array().unwrap().len(), 4, "{h}");
    }
    let acc = h["history"]["val_accuracy"][3].as_f64().unwrap();
    assert!(acc > 0.6, "digits should be learnt: {h}");
    let res = app
        .client()
        .get(app.url(&format!("/v1/jobs/{id}/history")))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    let since: Value = app
        .get(&format!("/v1/jobs/{id}/history?since=1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(since["epoch"], json!([2, 3]));
    assert_eq!(since["history"]["loss"][0], h["history"]["loss"][2]);

    // Retention keeps the latest and the best by the monitor, which is flagged.
    let ck: Value = app
        .get(&format!("/v1/jobs/{id}/checkpoints"))
        .await
        .json()
        .await
        .unwrap();
    let items = ck["items"].as_array().unwrap();
    let vals: Vec<f64> = h["history"]["val_accuracy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let mut best = 0;
    for (e, v) in vals.iter().enumerate() {
        if *v > vals[best] {
            best = e;
        }
    }
    let epochs: Vec<i64> = items.iter().map(|c| c["epoch"].as_i64().unwrap()).collect();
    let mut expect = vec![best as i64, 3];
    expect.dedup();
    assert_eq!(epochs, expect, "{ck}");
    for c in items {
        assert_eq!(c["is_best"], c["epoch"] == best as i64, "{ck}");
        assert!(c["metrics"]["val_accuracy"].is_number());
    }
    // The model is frozen once a job used it.
    let m: Value = app
        .get(&format!("/v1/models/{model}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["locked"], true);
    let list: Value = app.get("/v1/jobs?status=succeeded").await.json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let none: Value = app.get("/v1/jobs?status=queued").await.json().await.unwrap();
    assert_eq!(none["items"].as_array().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_replays_past_epochs_resumes_after_last_event_id_and_ends_after_done() {
    let app = spawn_app().await;
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 32).await;
    let job = submit(&app, &job_body(&model, &ds, 5)).await;
    let id = job["id"].as_str().unwrap().to_string();
    // A live subscriber from the start, and one that joins after the job finished.
    let live = {
        let app_base = app.base.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let res = client
                .get(format!("{app_base}/v1/jobs/{id}/events"))
                .send()
                .await
                .unwrap();
            let mut s = res.bytes_stream().eventsource();
            let mut names = Vec::new();
            while let Some(ev) = s.next().await {
                let ev = ev.unwrap();
                names.push((ev.id.parse::<i64>().unwrap(), ev.event));
            }
            names
        })
    };
    wait_finished(&app, &id).await;
    let all = read_events(&app, &id, None, usize::MAX).await;
    let stored = persisted(&all);
    let names: Vec<&str> = stored.iter().map(|e| e.event.as_str()).collect();
    let mut expect = vec!["status", "status"];
    for _ in 0..5 {
        expect.extend(["epoch", "checkpoint"]);
    }
    expect.extend(["status", "done"]);
    assert_eq!(names, expect);
    let ids: Vec<i64> = stored.iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>());
    let epochs: Vec<i64> = stored
        .iter()
        .filter(|e| e.event == "epoch")
        .map(|e| e.data["epoch"].as_i64().unwrap())
        .collect();
    assert_eq!(epochs, [0, 1, 2, 3, 4]);
    let e0 = &stored.iter().find(|e| e.event == "epoch").unwrap().data;
    for key in ["loss", "accuracy", "val_loss", "val_accuracy", "duration_ms"] {
        assert!(e0[key].is_number(), "{e0}");
    }
    let done = stored.last().unwrap();
    assert_eq!(done.data["status"], "succeeded");
    assert_eq!(done.data["stop_reason"], "completed");

    // Reconnecting after the third epoch event replays exactly what followed, in order.
    let third = stored.iter().filter(|e| e.event == "epoch").nth(2).unwrap().id;
    let rest = read_events(&app, &id, Some(third), usize::MAX).await;
    let rest_ids: Vec<i64> = rest.iter().map(|e| e.id).collect();
    assert_eq!(rest_ids, ((third + 1)..=ids.len() as i64).collect::<Vec<_>>());
    let rest_epochs: Vec<i64> = rest
        .iter()
        .filter(|e| e.event == "epoch")
        .map(|e| e.data["epoch"].as_i64().unwrap())
        .collect();
    assert_eq!(rest_epochs, [3, 4]);

    // The live subscriber saw every stored event once, in order, and its stream ended.
    let live = tokio::time::timeout(Duration::from_secs(30), live)
        .await
        .unwrap()
        .unwrap();
    let live_ids: Vec<i64> = live
        .iter()
        .filter(|(_, n)| n != "progress")
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(live_ids, ids);
    // Progress events carry the id of the last stored event, so a reconnect with them loses nothing.
    let mut last = 0;
    for (i, n) in &live {
        if n == "progress" {
            assert_eq!(*i, last);
        } else {
            last = *i;
        }
    }
    let p = assert_problem(app.get("/v1/jobs/nope/events").await, 404).await;
    assert!(p["detail"].as_str().unwrap().contains("job"));
}

/// A job long enough to be interrupted (about 0.1 s per epoch): digits, one sample per batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_to_a_finished_job_after_done_ends_the_stream_at_once() {
    let app = spawn_app().await;
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 16).await;
    let job = submit(&app, &job_body(&model, &ds, 2)).await;
    let id = job["id"].as_str().unwrap().to_string();
    wait_finished(&app, &id).await;
    let all = read_events(&app, &id, None, 10_000).await;
    let done = all.last().unwrap().clone();
    assert_eq!(done.event, "done");

    // What 100 browsers' EventSources send after the stream ended: the id of `done`.
    let reconnects = (0..100).map(|_| read_events(&app, &id, Some(done.id), 10_000));
    let streams = tokio::time::timeout(
        Duration::from_secs(20),
        futures_util::future::join_all(reconnects),
    )
    .await
    .expect("every reconnected stream ends");
    assert!(streams.iter().all(Vec::is_empty), "nothing is left to send");
    // Missing only `done`: that, then the end.
    let tail = read_events(&app, &id, Some(done.id - 1), 10_000).await;
    assert_eq!(tail.iter().map(|e| e.id).collect::<Vec<_>>(), [done.id]);
    assert_eq!(tail[0].event, "done");
    // An id past the end (another server's, a typo): the job is finished, so the stream ends too.
    assert!(
        read_events(&app, &id, Some(done.id + 1000), 10_000)
            .await
            .is_empty()
    );
    assert_eq!(app.get("/healthz").await.status(), 200);
}

fn long_body(model: &str, ds: &str, epochs: u32) -> Value {
    let mut b = job_body(model, ds, epochs);
    b["fit"]["batch_size"] = json!(1);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_queued_job_before_it_starts_and_a_running_one_within_a_batch() {
    let app = spawn_app_with(|c| c.workers = 1).await;
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 256).await;
    let running = submit(&app, &long_body(&model, &ds, 200)).await;
    let queued = submit(&app, &job_body(&model, &ds, 2)).await;
    let (rid, qid) = (running["id"].as_str().unwrap(), queued["id"].as_str().unwrap());
    wait_until(&app, rid, 60, |j| j["epoch"].as_i64().is_some_and(|e| e >= 0)).await;

    let res = app.post_json(&format!("/v1/jobs/{qid}/cancel"), &json!({})).await;
    assert_eq!(res.status(), 200);
    let q: Value = res.json().await.unwrap();
    assert_eq!(q["status"], "cancelled");
    assert_eq!(q["stop_reason"], "cancelled");
    assert!(
        q["started_at"].is_null(),
        "a cancelled queued job never starts: {q}"
    );
    let qe = read_events(&app, qid, None, 100).await;
    assert_eq!(qe.last().unwrap().event, "done");

    let res = app.post_json(&format!("/v1/jobs/{rid}/cancel"), &json!({})).await;
    assert_eq!(res.status(), 202);
    let t0 = Instant::now();
    let r = wait_finished(&app, rid).await;
    assert!(t0.elapsed() < Duration::from_secs(5), "stopped within a batch");
    assert_eq!(r["status"], "cancelled");
    assert_eq!(r["stop_reason"], "cancelled");
    assert!(r["saved_model_id"].is_null());
    let h: Value = app
        .get(&format!("/v1/jobs/{rid}/history"))
        .await
        .json()
        .await
        .unwrap();
    let n = h["epoch"].as_array().unwrap().len();
    assert!((1..200).contains(&n), "keeps its epochs: {h}");
    let ck: Value = app
        .get(&format!("/v1/jobs/{rid}/checkpoints"))
        .await
        .json()
        .await
        .unwrap();
    assert!(!ck["items"].as_array().unwrap().is_empty());
    // Cancelling a finished job is a conflict; an unknown one is 404.
    assert_problem(
        app.post_json(&format!("/v1/jobs/{rid}/cancel"), &json!({})).await,
        409,
    )
    .await;
    assert_problem(app.post_json("/v1/jobs/nope/cancel", &json!({})).await, 404).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataset_or_model_in_use_by_an_unfinished_job_cannot_be_deleted() {
    let app = spawn_app_with(|c| c.workers = 1).await;
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 256).await;
    let job = submit(&app, &long_body(&model, &ds, 200)).await;
    let id = job["id"].as_str().unwrap();

    let problem = assert_problem(app.delete(&format!("/v1/datasets/{ds}")).await, 409).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("queued or running job"),
        "{problem}"
    );
    assert_problem(app.delete(&format!("/v1/models/{model}")).await, 409).await;
    // Both are still there, intact.
    assert_eq!(app.get(&format!("/v1/datasets/{ds}")).await.status(), 200);
    assert_eq!(app.get(&format!("/v1/models/{model}")).await.status(), 200);

    app.post_json(&format!("/v1/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(wait_finished(&app, id).await["status"], "cancelled");
    // The finished job still uses both: they go with it only when asked.
    assert_problem(app.delete(&format!("/v1/datasets/{ds}")).await, 409).await;
    assert_eq!(
        app.delete(&format!("/v1/datasets/{ds}?cascade=true"))
            .await
            .status(),
        204
    );
    assert_eq!(app.delete(&format!("/v1/models/{model}")).await.status(), 204);
    assert_problem(app.delete(&format!("/v1/models/{model}")).await, 404).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_run_six_jobs_in_fifo_order_each_once() {
    let app = spawn_app_with(|c| c.workers = 2).await;
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 16).await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(
            submit(&app, &job_body(&model, &ds, 2)).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let mut started = Vec::new();
    for id in &ids {
        let j = wait_finished(&app, id).await;
        assert_eq!(j["status"], "succeeded", "{j}");
        assert_eq!(j["attempts"], 1, "run exactly once: {j}");
        let h: Value = app
            .get(&format!("/v1/jobs/{id}/history"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(h["epoch"], json!([0, 1]));
        started.push(j["started_at"].as_str().unwrap().to_string());
    }
    let page: Value = app.get("/v1/jobs?limit=4").await.json().await.unwrap();
    let first: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(first, ids[..4].iter().map(String::as_str).collect::<Vec<_>>());
    let next = page["next"].as_str().unwrap();
    let page: Value = app
        .get(&format!("/v1/jobs?limit=4&after={next}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert!(page["next"].is_null());
    // Same format and width (milliseconds, UTC), so string order is time order.
    let mut sorted = started.clone();
    sorted.sort();
    assert_eq!(started, sorted, "jobs start in submission order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diverging_job_fails_with_an_error_and_the_server_keeps_training() {
    let app = spawn_app().await;
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 16).await;
    let (diabetes, linear) = diabetes_regression(&app).await;
    let bad = submit(&app, &diverging_body(&linear, &diabetes, 3)).await;
    let j = wait_finished(&app, bad["id"].as_str().unwrap()).await;
    assert_eq!(j["status"], "failed", "{j}");
    assert_eq!(j["stop_reason"], "error");
    let err = j["error"].as_str().unwrap();
    assert!(err.contains("loss became"), "{err}");
    let ev = read_events(&app, bad["id"].as_str().unwrap(), None, 100).await;
    let done = ev.last().unwrap();
    assert_eq!(done.event, "done");
    assert_eq!(done.data["status"], "failed");
    // The server and its workers are unharmed.
    let good = submit(&app, &job_body(&model, &ds, 1)).await;
    let j = wait_finished(&app, good["id"].as_str().unwrap()).await;
    assert_eq!(j["status"], "succeeded");
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_stopping_stops_and_restores_the_best_weights() {
    let app = spawn_app().await;
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 16).await;
    let mut body = job_body(&model, &ds, 20);
    // No later epoch can improve by 10, so training stops after epoch 0 + patience 1.
    body["callbacks"] = json!([{"type": "early_stopping", "monitor": "val_loss", "patience": 1,
                                "min_delta": 10.0, "restore_best_weights": true}]);
    let job = submit(&app, &body).await;
    let j = wait_finished(&app, job["id"].as_str().unwrap()).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_eq!(j["stop_reason"], "early_stopping");
    assert_eq!(j["epoch"], 1);
    assert_eq!(j["best_epoch"], 0);
    let ev = read_events(&app, job["id"].as_str().unwrap(), None, 1000).await;
    assert_eq!(ev.last().unwrap().data["stop_reason"], "early_stopping");
    assert_eq!(ev.last().unwrap().data["best_epoch"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_can_continue_from_the_weights_of_a_saved_model() {
    let app = spawn_app().await;
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 32).await;
    let first = submit(&app, &job_body(&model, &ds, 3)).await;
    let first = wait_finished(&app, first["id"].as_str().unwrap()).await;
    assert_eq!(first["status"], "succeeded");
    let mut body = job_body(&model, &ds, 1);
    body["initial_weights"] = first["saved_model_id"].clone();
    let second = submit(&app, &body).await;
    let second = wait_finished(&app, second["id"].as_str().unwrap()).await;
    assert_eq!(second["status"], "succeeded", "{second}");
    let h1: Value = app
        .get(&format!("/v1/jobs/{}/history", first["id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    let h2: Value = app
        .get(&format!("/v1/jobs/{}/history", second["id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    // Starting from trained weights, the first epoch is already better than the first epoch from scratch.
    let scratch = h1["history"]["val_loss"][0].as_f64().unwrap();
    let continued = h2["history"]["val_loss"][0].as_f64().unwrap();
    assert!(
        continued < scratch,
        "continued {continued} vs from scratch {scratch}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Server {
    pub child: std::process::Child,
    pub app: Remote,
}

/// Starts the real `fitd` binary on `db` with `workers` training threads. On PostgreSQL, where a
/// restarted node takes a killed one's jobs over when their lease expires, the lease is 2 s.
pub async fn start_binary(db: &fitd::store::Db, workers: usize) -> Server {
    let port = free_port();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fitd"));
    cmd.args([
        "serve",
        "--addr",
        &format!("127.0.0.1:{port}"),
        "--workers",
        &workers.to_string(),
        "--db",
        &db.to_url(),
    ]);
    if let fitd::store::Db::Postgres(url) = db {
        let data = std::env::temp_dir().join(format!("fitd-{}", url.rsplit('/').next().unwrap()));
        cmd.arg("--data-dir").arg(data).args(["--job-lease-secs", "2"]);
    }
    let child = cmd.env("RUST_LOG", "warn").spawn().expect("fitd starts");
    let remote = Remote {
        base: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = remote.client.get(remote.url("/healthz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "fitd did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Server { child, app: remote }
}

async fn saved_weights(db: &fitd::store::Db, saved_model_id: &str) -> Vec<u8> {
    let data = tempfile::tempdir().unwrap();
    let store = fitd::store::Store::open(db, Some(data.path())).await.unwrap();
    let w = fitd::store::saved_models::get(&store, saved_model_id)
        .await
        .unwrap()
        .weights;
    store.pool.close().await;
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_killed_mid_training_resumes_and_ends_bit_identical_to_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = test_db(dir.path()).await;
    let mut s = start_binary(&db, 2).await;
    let ds = digits_dataset(&s.app).await;
    let model = digits_model(&s.app, 256).await;
    let epochs = 8;
    // Callback state (early stopping's history and best weights, the learning rate the table and
    // the plateau set) must survive the restart too.
    let mut callbacks_job = long_body(&model, &ds, epochs);
    callbacks_job["callbacks"] = json!([
        {"type": "early_stopping", "monitor": "val_loss", "patience": 100, "restore_best_weights": true},
        {"type": "model_checkpoint", "monitor": "val_accuracy", "save_best_only": true},
        {"type": "learning_rate_scheduler", "schedule": [{"epoch": 0, "learning_rate": 0.002},
                                                         {"epoch": 4, "learning_rate": 0.001}]},
        {"type": "reduce_lr_on_plateau", "monitor": "val_loss", "min_delta": 1e9, "patience": 1,
         "factor": 0.5, "cooldown": 2},
        {"type": "terminate_on_nan"}]);
    // And a schedule's position: it follows the step count in the checkpoint.
    let mut schedule_job = long_body(&model, &ds, epochs);
    schedule_job["compile"]["optimizer"]["learning_rate"] = json!({"type": "cosine_decay",
        "initial_learning_rate": 0.0, "decay_steps": 10000, "alpha": 0.05,
        "warmup_target": 0.002, "warmup_steps": 2000});
    let bodies = [callbacks_job, schedule_job];
    let mut ids = Vec::new();
    for body in &bodies {
        ids.push(submit(&s.app, body).await["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        wait_until(&s.app, id, 120, |j| j["epoch"].as_i64().is_some_and(|e| e >= 1)).await;
    }
    s.child.kill().unwrap();
    s.child.wait().unwrap();

    let mut s = start_binary(&db, 2).await;
    let mut resumed = Vec::new();
    for id in &ids {
        let j = wait_finished(&s.app, id).await;
        assert_eq!(j["status"], "succeeded", "{j}");
        assert!(j["attempts"].as_i64().unwrap() >= 2, "it was resumed: {j}");
        let h: Value = s
            .app
            .get(&format!("/v1/jobs/{id}/history"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            h["epoch"],
            json!((0..epochs).collect::<Vec<_>>()),
            "each epoch once: {h}"
        );
        let ev = read_events(&s.app, id, None, 10_000).await;
        let epoch_events: Vec<(i64, Value)> = ev
            .iter()
            .filter(|e| e.event == "epoch")
            .map(|e| (e.data["epoch"].as_i64().unwrap(), e.data["learning_rate"].clone()))
            .collect();
        let expected: Vec<(i64, Value)> = (0..epochs as i64)
            .zip(h["history"]["learning_rate"].as_array().unwrap().iter().cloned())
            .collect();
        assert_eq!(
            epoch_events, expected,
            "epoch events carry History's learning rates"
        );
        resumed.push((j, h));
    }
    // As the f32 values training used (JSON's decimal round trip may move an f64's last bit).
    let rates = |h: &Value| -> Vec<f32> {
        h["history"]["learning_rate"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    };
    let r = rates(&resumed[0].1);
    assert_eq!(&r[..5], &[0.002, 0.002, 0.001, 0.001, 0.001], "{r:?}");
    assert!(
        rates(&resumed[1].1).windows(2).all(|w| w[0] != w[1]),
        "the schedule moves each epoch"
    );

    // The same requests again, uninterrupted.
    let mut again = Vec::new();
    for body in &bodies {
        again.push(submit(&s.app, body).await["id"].as_str().unwrap().to_string());
    }
    let mut finished = Vec::new();
    for (id, (_, h)) in again.iter().zip(&resumed) {
        let j2 = wait_finished(&s.app, id).await;
        assert_eq!(j2["status"], "succeeded");
        let h2: Value = s
            .app
            .get(&format!("/v1/jobs/{id}/history"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            h["history"], h2["history"],
            "identical metrics and rates epoch by epoch"
        );
        finished.push(j2);
    }
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    for ((j, _), j2) in resumed.iter().zip(&finished) {
        let a = saved_weights(&db, j["saved_model_id"].as_str().unwrap()).await;
        let b = saved_weights(&db, j2["saved_model_id"].as_str().unwrap()).await;
        assert!(!a.is_empty());
        assert!(a == b, "final weights are bit-identical");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_puts_a_running_job_back_in_the_queue_and_the_next_start_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = test_db(dir.path()).await;
    let mut s = start_binary(&db, 1).await;
    let ds = digits_dataset(&s.app).await;
    let model = digits_model(&s.app, 256).await;
    let job = submit(&s.app, &long_body(&model, &ds, 4)).await;
    let id = job["id"].as_str().unwrap().to_string();
    wait_until(&s.app, &id, 120, |j| j["epoch"].as_i64().is_some_and(|e| e >= 0)).await;
    // An open event stream must not hold the exit.
    let res = s
        .app
        .client()
        .get(s.app.url(&format!("/v1/jobs/{id}/events")))
        .send()
        .await
        .unwrap();
    let watcher = tokio::spawn(async move {
        let mut stream = res.bytes_stream().eventsource();
        let mut names = Vec::new();
        while let Some(Ok(ev)) = stream.next().await {
            names.push(ev.event);
        }
        names
    });
    let t0 = Instant::now();
    let pid = s.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = s.child.wait().unwrap();
    assert!(status.success(), "clean exit: {status}");
    let names = tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(names.last().map(String::as_str), Some("status"), "{names:?}");
    let scratch = tempfile::tempdir().unwrap();
    let store = fitd::store::Store::open(&db, Some(scratch.path())).await.unwrap();
    let (status, data): (String, String) = sqlx::query_as(
        "SELECT j.status, e.data FROM jobs j JOIN job_events e ON e.job_id = j.id \
         WHERE j.id = $1 ORDER BY e.seq DESC LIMIT 1",
    )
    .bind(&id)
    .fetch_one(&store.pool)
    .await
    .unwrap();
    store.pool.close().await;
    assert_eq!(status, "queued", "back in the queue");
    assert!(data.contains("\"queued\""), "{data}");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "exited within a few seconds"
    );

    let s = start_binary(&db, 1).await;
    let j: Value = s.app.get(&format!("/v1/jobs/{id}")).await.json().await.unwrap();
    assert_ne!(j["status"], "failed", "{j}");
    let j = wait_finished(&s.app, &id).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_eq!(j["attempts"], 2, "resumed once: {j}");
    let h: Value = s
        .app
        .get(&format!("/v1/jobs/{id}/history"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(h["epoch"], json!([0, 1, 2, 3]));
    let mut child = s.child;
    child.kill().unwrap();
    child.wait().unwrap();
}
