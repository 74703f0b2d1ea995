//! The Open Inference Protocol (KServe v2) routes: health, model metadata and readiness, infer with
//! flat or nested FP32 data, and each bad request as a problem carrying the protocol's `error`.

use serde_json::{Value, json};

use super::saved_models::{book_saved_model, pixels};
use super::support::{assert_problem, error_fields, spawn_app, spawn_app_with};

#[tokio::test]
async fn health_and_server_metadata_answer() {
    let app = spawn_app().await;
    let live: Value = app.get("/v2/health/live").await.json().await.unwrap();
    assert_eq!(live, json!({"live": true}));
    let ready: Value = app.get("/v2/health/ready").await.json().await.unwrap();
    assert_eq!(ready, json!({"ready": true}));
    let meta: Value = app.get("/v2").await.json().await.unwrap();
    assert_eq!(meta["name"], "fitd");
}

#[tokio::test]
async fn model_metadata_and_readiness_describe_the_saved_model() {
    let app = spawn_app().await;
    let (id, _) = book_saved_model(&app).await;
    let meta: Value = app.get(&format!("/v2/models/{id}")).await.json().await.unwrap();
    assert_eq!(meta["name"], id.as_str());
    assert_eq!(
        meta["inputs"],
        json!([{"name": "input", "datatype": "FP32", "shape": [-1, 28, 28]}])
    );
    assert_eq!(
        meta["outputs"],
        json!([{"name": "output", "datatype": "FP32", "shape": [-1, 10]}])
    );
    let ready: Value = app
        .get(&format!("/v2/models/{id}/ready"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ready, json!({"name": id, "ready": true}));
    let v1: Value = app
        .get(&format!("/v2/models/{id}/versions/1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v1, meta);
    let ready1: Value = app
        .get(&format!("/v2/models/{id}/versions/1/ready"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ready1, ready);
    assert_problem(app.get(&format!("/v2/models/{id}/versions/2")).await, 404).await;
    let problem = assert_problem(app.get("/v2/models/nope/ready").await, 404).await;
    assert!(problem["error"].as_str().unwrap().contains("nope"), "{problem}");
    assert_problem(app.get("/v2/models/nope").await, 404).await;
}

#[tokio::test]
async fn infer_returns_the_same_outputs_as_predict_for_flat_and_nested_data() {
    let app = spawn_app().await;
    let (id, model) = book_saved_model(&app).await;
    let x = pixels(3, 784, 5);
    let flat: Vec<f32> = x.iter().copied().collect();
    let body = json!({"id": "req-1", "inputs": [{"name": "x", "shape": [3, 28, 28], "datatype": "FP32", "data": flat}]});
    let res = app.post_json(&format!("/v2/models/{id}/infer"), &body).await;
    assert_eq!(res.status(), 200);
    let out: Value = res.json().await.unwrap();
    assert_eq!(out["model_name"], id.as_str());
    assert_eq!(out["id"], "req-1");
    assert_eq!(out["outputs"][0]["name"], "output");
    assert_eq!(out["outputs"][0]["shape"], json!([3, 10]));
    assert_eq!(out["outputs"][0]["datatype"], "FP32");
    let got: Vec<u32> = out["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v.as_f64().unwrap() as f32).to_bits())
        .collect();
    let want: Vec<u32> = model
        .predict(x.view())
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    assert_eq!(got, want);

    // Nested data and a flat sample shape give the same answer.
    let nested: Vec<Vec<f32>> = x.rows().into_iter().map(|r| r.to_vec()).collect();
    let body = json!({"inputs": [{"name": "x", "shape": [3, 784], "datatype": "FP32", "data": nested}],
                      "outputs": [{"name": "output"}]});
    let out2: Value = app
        .post_json(&format!("/v2/models/{id}/infer"), &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(out2["outputs"], out["outputs"]);
    let out3: Value = app
        .post_json(&format!("/v2/models/{id}/versions/1/infer"), &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(out3["outputs"], out["outputs"]);
    assert_problem(
        app.post_json(&format!("/v2/models/{id}/versions/7/infer"), &body)
            .await,
        404,
    )
    .await;
}

#[tokio::test]
async fn bad_infer_requests_are_problems_with_an_error_member() {
    let app = spawn_app_with(|c| c.max_predict_rows = 2).await;
    let (id, _) = book_saved_model(&app).await;
    let path = format!("/v2/models/{id}/infer");
    let input = |shape: Value, datatype: &str, n: usize| json!({"name": "x", "shape": shape, "datatype": datatype, "data": vec![0.0; n]});
    let cases = [
        (
            json!({"inputs": [input(json!([1, 784]), "INT32", 784)]}),
            "inputs[0].datatype",
            "FP32",
        ),
        (
            json!({"inputs": [input(json!([1, 784]), "FP32", 700)]}),
            "inputs[0].data",
            "holds 700 values",
        ),
        (
            json!({"inputs": [input(json!([1, 28, 27]), "FP32", 756)]}),
            "inputs[0].shape",
            "got [28, 27]",
        ),
        (
            json!({"inputs": [input(json!([0, 784]), "FP32", 0)]}),
            "inputs[0].data",
            "at least one",
        ),
        (
            json!({"inputs": [input(json!([3, 784]), "FP32", 3 * 784)]}),
            "inputs[0].data",
            "at most 2",
        ),
        (
            json!({"inputs": [input(json!([-1, 784]), "FP32", 784)]}),
            "inputs[0].shape",
            "non-negative",
        ),
        (json!({"inputs": []}), "inputs", "exactly one"),
        (
            json!({"inputs": [input(json!([1, 784]), "FP32", 784)], "outputs": [{"name": "logits"}]}),
            "outputs[0].name",
            "logits",
        ),
    ];
    for (body, field, needle) in cases {
        let problem = assert_problem(app.post_json(&path, &body).await, 422).await;
        assert_eq!(error_fields(&problem), [field], "{problem}");
        assert!(
            problem["error"].as_str().unwrap().contains(needle),
            "{needle}: {problem}"
        );
    }
    let mut data = vec![json!(0.0); 784];
    data[3] = json!(-1e39);
    let body = json!({"inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP32", "data": data}]});
    let problem = assert_problem(app.post_json(&path, &body).await, 422).await;
    assert_eq!(error_fields(&problem), ["inputs[0].data[0]"]);
    let res = app
        .client
        .post(app.url(&path))
        .header("content-type", "application/json")
        .body("{\"inputs\": [")
        .send()
        .await
        .unwrap();
    assert_problem(res, 400).await;
    let body = json!({"inputs": [input(json!([1, 784]), "FP32", 784)]});
    assert_problem(app.post_json("/v2/models/nope/infer", &body).await, 404).await;
}
