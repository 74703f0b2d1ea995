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
async fn responses_carry_a_request_id_and_no_cors_headers_by_default() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("origin", "http://dashboard.example")
        .send()
        .await
        .unwrap();
    assert!(res.headers().contains_key("x-request-id"));
    assert!(!res.headers().contains_key("access-control-allow-origin"));
}

/// Sends `body` with `content_type` (none when `None`).
async fn post_typed(
    app: &super::support::TestApp,
    path: &str,
    content_type: Option<&str>,
    body: String,
) -> reqwest::Response {
    let mut req = app.client.post(app.url(path)).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn json_bodies_must_be_application_json_or_a_plus_json_type_else_415() {
    let app = spawn_app().await;
    let (saved, _) = super::saved_models::book_saved_model(&app).await;
    let model = super::support::book_model().to_string();
    let source = json!({"name": "digits", "source": "digits"}).to_string();
    let instances = json!({"instances": [vec![0.0; 784]]}).to_string();
    let infer = json!({"inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP32",
                                   "data": vec![0.0; 784]}]})
    .to_string();
    let predict = format!("/v1/saved-models/{saved}/predict");
    let infer_path = format!("/v2/models/{saved}/infer");
    let refused = [
        ("/v1/models", Some("application/jsonp"), &model),
        ("/v1/models", Some("text/plain"), &model),
        ("/v1/models", None, &model),
        ("/v1/datasets", Some("application/jsonp"), &source),
        ("/v1/datasets", Some("text/json"), &source),
        ("/v1/datasets", None, &source),
        (&predict, None, &instances),
        (&predict, Some("application/jsonp"), &instances),
        (&predict, Some("text/plain"), &instances),
        (&infer_path, Some("text/plain"), &infer),
        (&infer_path, Some("application/jsonp"), &infer),
        // (KServe infer without a Content-Type is accepted: Triton's client libraries send none.)
    ];
    for (path, ct, body) in refused {
        let problem = assert_problem(post_typed(&app, path, ct, body.clone()).await, 415).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("application/json"), "{path} {ct:?}: {problem}");
        match ct {
            Some(ct) => assert!(detail.contains(ct), "{path} {ct:?}: {problem}"),
            None => assert!(detail.contains("no Content-Type"), "{path}: {problem}"),
        }
    }
    // Nothing was created by the refused requests.
    let listed: serde_json::Value = app.get("/v1/models").await.json().await.unwrap();
    assert_eq!(
        listed["items"].as_array().unwrap().len(),
        1,
        "only the saved model's architecture"
    );
    let listed: serde_json::Value = app.get("/v1/datasets").await.json().await.unwrap();
    assert_eq!(listed["items"], json!([]));

    // `application/json` with parameters and `+json` types are JSON.
    let accepted = [
        ("/v1/models", "application/vnd.api+json", &model, 201),
        (&predict, "application/json; charset=utf-8", &instances, 200),
        (&predict, "application/vnd.fitd+json", &instances, 200),
        (&infer_path, "Application/JSON", &infer, 200),
    ];
    for (path, ct, body, status) in accepted {
        let res = post_typed(&app, path, Some(ct), body.clone()).await;
        assert_eq!(res.status(), status, "{path} {ct}: {}", res.text().await.unwrap());
    }
    assert_eq!(app.get("/healthz").await.status(), 200);
    let tmp = app.dir.path().join("fitd-data/tmp");
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
}

#[tokio::test]
async fn problems_quote_only_a_bounded_part_of_a_huge_or_deeply_nested_input() {
    let app = spawn_app().await;
    let (saved, _) = super::saved_models::book_saved_model(&app).await;
    let bounded = |text: &str| {
        assert!(text.len() < 4096, "{} bytes: {}...", text.len(), &text[..200]);
    };

    // One number inside 100,000 nested arrays.
    let deep = format!(
        "{{\"instances\": {}1{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let res = post_typed(
        &app,
        &format!("/v1/saved-models/{saved}/predict"),
        Some("application/json"),
        deep,
    )
    .await;
    let problem = assert_problem(res, 422).await;
    bounded(&problem.to_string());
    assert!(
        problem["detail"].as_str().unwrap().contains("more bytes"),
        "{problem}"
    );

    // A field name of a million characters.
    let mut spec = super::support::book_model();
    spec["x".repeat(1_000_000)] = json!(1);
    let problem = assert_problem(app.post_json("/v1/models", &spec).await, 422).await;
    bounded(&problem.to_string());
    let field = problem["errors"][0]["field"].as_str().unwrap();
    assert!(field.starts_with("xxxx") && field.len() < 300, "{field}");

    // A query value of 60,000 characters (axum's own rejection, rewritten as a problem).
    let res = app.get(&format!("/v1/jobs?status={}", "q".repeat(60_000))).await;
    assert!(res.status().is_client_error(), "{}", res.status());
    let text = res.text().await.unwrap();
    bounded(&text);
    serde_json::from_str::<serde_json::Value>(&text).expect("a problem document");

    assert_eq!(app.get("/healthz").await.status(), 200);
}
