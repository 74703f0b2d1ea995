//! Browser safety over HTTP: no CORS unless origins are configured, and requests a page on another
//! site can send without a preflight (multipart uploads, `text/plain` posts) change nothing.

use reqwest::multipart::{Form, Part};
use serde_json::Value;

use super::jobs::{digits_dataset, digits_model, job_body, submit};
use super::support::{TestApp, assert_problem, spawn_app, spawn_app_with};

const EVIL: &str = "http://evil.example";

/// Headers Chromium sends on a cross-site request from `origin`.
fn from(req: reqwest::RequestBuilder, origin: &str, site: &str) -> reqwest::RequestBuilder {
    req.header("origin", origin).header("sec-fetch-site", site)
}

fn csv_upload() -> Form {
    Form::new().text("name", "planted").part(
        "file",
        Part::bytes(b"label,a,b\n0,1,2\n1,3,4\n".to_vec()).file_name("data.csv"),
    )
}

async fn dataset_count(app: &TestApp) -> usize {
    let list: Value = app.get("/v1/datasets").await.json().await.unwrap();
    list["items"].as_array().unwrap().len()
}

#[tokio::test]
async fn no_cors_by_default_and_cross_site_simple_requests_change_nothing() {
    let app = spawn_app().await;
    // No CORS headers on reads or preflights from another origin.
    let res = from(app.client.get(app.url("/v1/datasets")), EVIL, "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(!res.headers().contains_key("access-control-allow-origin"));
    let res = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/v1/models"))
        .header("origin", EVIL)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(!res.headers().contains_key("access-control-allow-origin"));

    // A multipart upload from another site (fetch metadata) or an older browser (Origin only).
    let res = from(app.client.post(app.url("/v1/datasets")), EVIL, "cross-site")
        .multipart(csv_upload())
        .send()
        .await
        .unwrap();
    let p = assert_problem(res, 403).await;
    assert!(p["detail"].as_str().unwrap().contains("--cors-origin"), "{p}");
    let res = app
        .client
        .post(app.url("/v1/datasets"))
        .header("origin", EVIL)
        .multipart(csv_upload())
        .send()
        .await
        .unwrap();
    assert_problem(res, 403).await;
    assert_eq!(
        dataset_count(&app).await,
        0,
        "a cross-site upload stored a dataset"
    );

    // A text/plain cancel from another site leaves the job alone.
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 16).await;
    let job = submit(&app, &job_body(&model, &ds, 500)).await;
    let id = job["id"].as_str().unwrap();
    let res = from(
        app.client.post(app.url(&format!("/v1/jobs/{id}/cancel"))),
        EVIL,
        "cross-site",
    )
    .header("content-type", "text/plain")
    .body("x")
    .send()
    .await
    .unwrap();
    assert_problem(res, 403).await;
    let job: Value = app.get(&format!("/v1/jobs/{id}")).await.json().await.unwrap();
    assert!(
        matches!(job["status"].as_str(), Some("queued" | "running")),
        "{job}"
    );

    // The same request from the server's own origin (the dashboard) works.
    let res = from(
        app.client.post(app.url(&format!("/v1/jobs/{id}/cancel"))),
        &app.base,
        "same-origin",
    )
    .send()
    .await
    .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let res = app
        .client
        .post(app.url("/v1/datasets"))
        .header("origin", &app.base)
        .multipart(csv_upload())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
}

#[tokio::test]
async fn configured_origins_get_cors_and_may_change_state() {
    let allowed = "https://app.example";
    let app = spawn_app_with(|c| c.cors_origins = vec![allowed.into()]).await;
    let res = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/v1/datasets"))
        .header("origin", allowed)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(res.headers()["access-control-allow-origin"], allowed);
    let methods = res.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        methods.contains("POST") && methods.contains("DELETE"),
        "{methods}"
    );

    let res = from(app.client.post(app.url("/v1/datasets")), allowed, "cross-site")
        .multipart(csv_upload())
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], allowed);
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());

    let res = from(app.client.post(app.url("/v1/datasets")), EVIL, "cross-site")
        .multipart(csv_upload())
        .send()
        .await
        .unwrap();
    assert!(!res.headers().contains_key("access-control-allow-origin"));
    assert_problem(res, 403).await;
    assert_eq!(dataset_count(&app).await, 1);
}
