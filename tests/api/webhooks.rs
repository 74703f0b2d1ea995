//! Webhooks against a local receiver: signed deliveries of every status change, a retry after a
//! 500, attempts recorded, and deliveries queued while the receiver was down sent after a restart.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::jobs::{digits_dataset, digits_model, job_body, submit, wait_finished};
use super::support::{TestApp, assert_problem, error_fields, spawn_app};

const SECRET: &str = "a-secret-of-some-length";

/// What the receiver saw: headers and body of each request.
type Seen = Arc<Mutex<Vec<(HeaderMap, String)>>>;

/// A local HTTP receiver on `port` (0: any) answering 500 to its first `fail_first` requests.
async fn receiver(port: u16, fail_first: usize) -> (u16, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let log = log.clone();
            async move {
                let mut l = log.lock().unwrap();
                l.push((headers, body));
                if l.len() <= fail_first {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, seen)
}

/// HMAC-SHA256 written out from RFC 2104 for the test, independently of the server's.
fn hmac(key: &[u8], msg: &[u8]) -> String {
    let mut k = key.to_vec();
    if k.len() > 64 {
        k = Sha256::digest(&k).to_vec();
    }
    k.resize(64, 0);
    let inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).chain(msg.iter().copied()).collect();
    let inner = Sha256::digest(&inner);
    let outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).chain(inner.iter().copied()).collect();
    hex::encode(Sha256::digest(&outer))
}

fn check_signature(headers: &HeaderMap, body: &str) {
    let ts = headers["fitd-timestamp"].to_str().unwrap();
    let sig = headers["fitd-signature"].to_str().unwrap();
    assert_eq!(
        sig,
        format!(
            "v1={}",
            hmac(SECRET.as_bytes(), format!("{ts}.{body}").as_bytes())
        )
    );
    let age = time::OffsetDateTime::now_utc().unix_timestamp() - ts.parse::<i64>().unwrap();
    assert!((0..120).contains(&age), "timestamp {ts}");
}

async fn wait_for(seen: &Seen, what: &str, done: impl Fn(&[(HeaderMap, String)]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if done(&seen.lock().unwrap()) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `status` of each delivered body, successful or not, in arrival order.
fn statuses(seen: &[(HeaderMap, String)]) -> Vec<String> {
    seen.iter()
        .map(|(_, b)| {
            serde_json::from_str::<Value>(b).unwrap()["status"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

async fn subscribe(app: &TestApp, port: u16, events: Value) -> String {
    let res = app
        .post_json(
            "/v1/webhooks",
            &json!({"url": format!("http://127.0.0.1:{port}/hook"), "events": events, "secret": SECRET}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let hook: Value = res.json().await.unwrap();
    assert!(hook.get("secret").is_none(), "the secret is never shown: {hook}");
    hook["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_changes_are_delivered_signed_and_a_500_is_retried_and_recorded() {
    let app = spawn_app().await;
    let (port, seen) = receiver(0, 1).await;
    let hook = subscribe(&app, port, json!(["job.*"])).await;
    let only_done = subscribe(&app, port, json!(["job.succeeded", "job.failed"])).await;
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 8).await;
    let job = submit(&app, &job_body(&model, &ds, 1)).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_finished(&app, &job).await;
    // queued, running and succeeded for `hook` (the first try of the first refused with a 500 and
    // retried), succeeded once more for `only_done`.
    wait_for(&seen, "5 deliveries", |s| s.len() >= 5).await;
    let got = seen.lock().unwrap().clone();
    // The first request was refused; the same delivery came again.
    let refused = got[0].0["fitd-delivery"].clone();
    assert_eq!(
        got.iter().filter(|(h, _)| h["fitd-delivery"] == refused).count(),
        2
    );
    let refused_status = statuses(&got)[0].clone();
    let mut st = statuses(&got);
    st.sort();
    let mut want = vec![
        "queued",
        "running",
        "succeeded",
        "succeeded",
        refused_status.as_str(),
    ];
    want.sort();
    assert_eq!(st, want);
    for (headers, body) in &got {
        check_signature(headers, body);
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["job_id"], job);
        assert_eq!(v["type"], format!("job.{}", v["status"].as_str().unwrap()));
        assert_eq!(
            headers["fitd-event"].to_str().unwrap(),
            v["type"].as_str().unwrap()
        );
    }

    // The outbox records each delivery's attempts and last answer.
    let wait_delivered = async |id: &str, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let d: Value = app
                .get(&format!("/v1/webhooks/{id}/deliveries"))
                .await
                .json()
                .await
                .unwrap();
            let items = d["items"].as_array().unwrap().clone();
            if items.len() == n && items.iter().all(|i| i["status"] == "delivered") {
                return items;
            }
            assert!(Instant::now() < deadline, "{d}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let mut items = wait_delivered(&hook, 3).await;
    let done_items = wait_delivered(&only_done, 1).await;
    assert_eq!(done_items[0]["event"], "job.succeeded");
    items.extend(done_items);
    let retried: Vec<&Value> = items.iter().filter(|i| i["attempts"] == 2).collect();
    assert_eq!(retried.len(), 1, "{items:?}");
    assert_eq!(retried[0]["id"].as_str().unwrap(), refused.to_str().unwrap());
    assert!(
        items
            .iter()
            .all(|i| i["last_status"] == 204 && i["attempts"].as_i64().unwrap() >= 1)
    );
    assert_eq!(items.iter().filter(|i| i["attempts"] == 1).count(), 3);
    let list: Value = app.get("/v1/webhooks").await.json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        app.delete(&format!("/v1/webhooks/{only_done}")).await.status(),
        204
    );
    assert_problem(
        app.get(&format!("/v1/webhooks/{only_done}/deliveries")).await,
        404,
    )
    .await;
    assert_problem(app.delete(&format!("/v1/webhooks/{only_done}")).await, 404).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_queued_while_the_receiver_is_down_arrive_after_a_restart() {
    let app = spawn_app().await;
    // A port nobody listens on yet.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let hook = subscribe(&app, port, json!(["job.*"])).await;
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 8).await;
    let job = submit(&app, &job_body(&model, &ds, 1)).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_finished(&app, &job).await;
    // Every try so far failed without an answer; the reason is recorded.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d: Value = app
            .get(&format!("/v1/webhooks/{hook}/deliveries"))
            .await
            .json()
            .await
            .unwrap();
        let items = d["items"].as_array().unwrap();
        if items.len() == 3 && items.iter().all(|i| i["attempts"].as_i64().unwrap() >= 1) {
            assert!(
                items
                    .iter()
                    .all(|i| i["status"] == "pending" && i["last_error"].is_string()),
                "{d}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let app = app.restart().await;
    let (_, seen) = receiver(port, 0).await;
    wait_for(&seen, "the 3 queued deliveries", |s| s.len() >= 3).await;
    let got = seen.lock().unwrap().clone();
    let mut st = statuses(&got);
    st.sort();
    assert_eq!(st, ["queued", "running", "succeeded"]);
    for (headers, body) in &got {
        check_signature(headers, body);
    }
    drop(app);
}

#[tokio::test]
async fn a_bad_subscription_names_each_field() {
    let app = spawn_app().await;
    let res = app
        .post_json(
            "/v1/webhooks",
            &json!({"url": "ftp://example.com/x", "events": ["job.succeeded", "job.exploded"], "secret": "short"}),
        )
        .await;
    let problem = assert_problem(res, 422).await;
    assert_eq!(error_fields(&problem), ["url", "events[1]", "secret"]);
    let res = app
        .post_json(
            "/v1/webhooks",
            &json!({"url": "http://127.0.0.1:1/x", "events": [], "secret": SECRET}),
        )
        .await;
    assert_eq!(error_fields(&assert_problem(res, 422).await), ["events"]);
}
