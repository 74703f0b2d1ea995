//! The error format: every failure, axum's own rejections included, is problem+json.

use serde_json::json;

use super::support::{assert_problem, spawn_app, spawn_app_with};

#[tokio::test]
async fn health_and_readiness_answer_ok() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    let ready: serde_json::Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["status"], "ok");
}

#[tokio::test]
async fn malformed_json_is_a_400_problem() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(app.url("/v1/models"))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_problem(res, 400).await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_415_problem() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(app.url("/v1/models"))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_problem(res, 415).await;
}

#[tokio::test]
async fn unknown_fields_are_a_422_naming_the_field() {
    let app = spawn_app().await;
    let mut spec = super::support::book_model();
    spec["colour"] = json!("red");
    let problem = assert_problem(app.post_json("/v1/models", &spec).await, 422).await;
    assert_eq!(super::support::error_fields(&problem), ["colour"]);
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_problems() {
    let app = spawn_app().await;
    assert_problem(app.get("/v1/nothing-here").await, 404).await;
    let res = app.client.put(app.url("/v1/models")).send().await.unwrap();
    assert_problem(res, 405).await;
}

#[tokio::test]
async fn a_json_body_over_the_limit_is_a_413_problem() {
    let app = spawn_app_with(|c| c.max_json_bytes = 1024).await;
    let mut spec = super::support::book_model();
    spec["name"] = json!("x".repeat(4096));
    assert_problem(app.post_json("/v1/models", &spec).await, 413).await;
}

#[tokio::test]
async fn responses_carry_a_request_id_and_open_cors_for_gets() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("origin", "http://dashboard.example")
        .send()
        .await
        .unwrap();
    assert!(res.headers().contains_key("x-request-id"));
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
}
