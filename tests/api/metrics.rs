//! `GET /metrics`: scraped while requests, a training job, predictions and an event stream run, the
//! counters move by exactly what happened (each server has its own recorder).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::jobs::{digits_dataset, digits_model, job_body, submit, wait_finished};
use super::support::{TestApp, spawn_app};

async fn scrape(app: &TestApp) -> String {
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    res.text().await.unwrap()
}

/// The value of the sample `name` whose labels include every `labels` pair; `None` when absent.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let all = labels
            .iter()
            .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        (metric == name && all).then(|| value.parse().ok())?
    })
}

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
}

#[tokio::test]
async fn metrics_count_requests_jobs_predictions_cache_streams_and_the_pool() {
    let app = spawn_app().await;
    let before = scrape(&app).await;
    let pool_max = match app.db() {
        fitd::store::Db::Sqlite(_) => 8.0,
        fitd::store::Db::Postgres(_) => 16.0,
    };
    assert_eq!(value(&before, "fitd_db_pool_max_connections", &[]), pool_max);
    assert_eq!(value(&before, "fitd_jobs", &[("status", "queued")]), 0.0);

    // Requests, counted by route template and status, never by raw URL.
    for _ in 0..3 {
        assert_eq!(app.get("/v1/datasets").await.status(), 200);
    }
    let missing = "0193aaaa-0000-7000-8000-000000000000";
    assert_eq!(app.get(&format!("/v1/jobs/{missing}")).await.status(), 404);
    let text = scrape(&app).await;
    assert!(text.contains("# TYPE fitd_http_requests_total counter"), "{text}");
    assert!(
        text.contains("# TYPE fitd_http_request_duration_seconds histogram"),
        "{text}"
    );
    let list = [("method", "GET"), ("route", "/v1/datasets"), ("status", "200")];
    assert_eq!(value(&text, "fitd_http_requests_total", &list), 3.0);
    assert_eq!(
        value(&text, "fitd_http_request_duration_seconds_count", &list),
        3.0
    );
    assert!(
        sample(
            &text,
            "fitd_http_request_duration_seconds_bucket",
            &[("route", "/v1/datasets"), ("le", "+Inf")]
        )
        .is_some()
    );
    let job_route = [("method", "GET"), ("route", "/v1/jobs/{id}"), ("status", "404")];
    assert_eq!(value(&text, "fitd_http_requests_total", &job_route), 1.0);
    assert!(!text.contains(missing), "a raw id is a label:\n{text}");
    // The first scrape itself was counted.
    assert_eq!(
        value(&text, "fitd_http_requests_total", &[("route", "/metrics")]),
        1.0
    );

    // A training job: epochs, samples, queue wait, jobs by status.
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 16).await;
    let job = submit(&app, &job_body(&model, &ds, 2)).await;
    let job = wait_finished(&app, job["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let text = scrape(&app).await;
    assert_eq!(value(&text, "fitd_epochs_total", &[]), 2.0);
    assert_eq!(value(&text, "fitd_epoch_duration_seconds_count", &[]), 2.0);
    // digits: 1797 samples, 20 % held out for validation.
    let train = (1797.0_f64 * 0.8).floor();
    let samples = value(&text, "fitd_trained_samples_total", &[]);
    assert!((samples - 2.0 * train).abs() <= 2.0, "{samples}");
    assert!(value(&text, "fitd_training_samples_per_second", &[]) > 0.0);
    assert_eq!(value(&text, "fitd_job_queue_wait_seconds_count", &[]), 1.0);
    assert_eq!(value(&text, "fitd_jobs", &[("status", "succeeded")]), 1.0);
    assert_eq!(value(&text, "fitd_job_queue_depth", &[]), 0.0);

    // Predictions by saved model, and the model cache (one load, then a hit).
    let saved = job["saved_model_id"].as_str().unwrap().to_string();
    let rows = json!({"instances": [vec![0.0; 64], vec![8.0; 64], vec![16.0; 64]]});
    for _ in 0..2 {
        let res = app
            .post_json(&format!("/v1/saved-models/{saved}/predict"), &rows)
            .await;
        assert_eq!(res.status(), 200);
    }
    let text = scrape(&app).await;
    let by_model = [("model", saved.as_str())];
    assert_eq!(value(&text, "fitd_predict_requests_total", &by_model), 2.0);
    assert_eq!(value(&text, "fitd_predicted_instances_total", &by_model), 6.0);
    assert_eq!(
        value(&text, "fitd_predict_duration_seconds_count", &by_model),
        2.0
    );
    let cache: Value = app.get("/v1/model-cache").await.json().await.unwrap();
    assert_eq!(
        value(&text, "fitd_model_cache_misses_total", &[]),
        cache["misses"].as_f64().unwrap()
    );
    assert_eq!(
        value(&text, "fitd_model_cache_hits_total", &[]),
        cache["hits"].as_f64().unwrap()
    );
    assert!(cache["hits"].as_u64().unwrap() >= 1, "{cache}");

    // An open event stream is counted until it ends.
    let long = submit(&app, &job_body(&model, &ds, 500)).await;
    let long_id = long["id"].as_str().unwrap().to_string();
    let mut stream = app.get(&format!("/v1/jobs/{long_id}/events")).await;
    assert_eq!(stream.status(), 200);
    stream.chunk().await.unwrap().expect("a first event");
    let text = scrape(&app).await;
    assert_eq!(value(&text, "fitd_sse_streams_open", &[]), 1.0);
    let res = app
        .post_json(&format!("/v1/jobs/{long_id}/cancel"), &json!({}))
        .await;
    assert!(res.status().is_success(), "{}", res.status());
    while stream.chunk().await.unwrap().is_some() {}
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(&app).await;
        if value(&text, "fitd_sse_streams_open", &[]) == 0.0 {
            assert_eq!(value(&text, "fitd_jobs", &[("status", "cancelled")]), 1.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stream is still counted as open:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
