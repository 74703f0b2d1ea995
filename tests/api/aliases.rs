//! Aliases: stable names for saved models that predict, evaluate and KServe v2 accept in place of an
//! id; moving one is atomic and the next request after the `PUT` uses the new model.

use serde_json::{Value, json};

use super::jobs::{digits_dataset, digits_model, job_body, submit, wait_finished};
use super::support::{TestApp, assert_problem, error_fields, spawn_app};

async fn put(app: &TestApp, name: &str, body: &Value) -> reqwest::Response {
    app.client
        .put(app.url(&format!("/v1/aliases/{name}")))
        .json(body)
        .send()
        .await
        .expect("request sent")
}

/// Two saved models of the same architecture that predict differently.
async fn two_saved_models(app: &TestApp) -> (String, String) {
    let ds = digits_dataset(app).await;
    let model = digits_model(app, 16).await;
    let mut a = job_body(&model, &ds, 1);
    a["fit"]["seed"] = json!(1);
    let mut b = job_body(&model, &ds, 2);
    b["fit"]["seed"] = json!(2);
    let a = submit(app, &a).await["id"].as_str().unwrap().to_string();
    let b = submit(app, &b).await["id"].as_str().unwrap().to_string();
    let a = wait_finished(app, &a).await["saved_model_id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = wait_finished(app, &b).await["saved_model_id"]
        .as_str()
        .unwrap()
        .to_string();
    (a, b)
}

fn instance() -> Value {
    json!({"instances": [(0..64).map(|i| (i % 17) as f64).collect::<Vec<_>>()]})
}

async fn probabilities(app: &TestApp, id_or_alias: &str) -> Value {
    let res = app
        .post_json(&format!("/v1/saved-models/{id_or_alias}/predict"), &instance())
        .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    res.json::<Value>().await.unwrap()["predictions"][0]["probabilities"].clone()
}

async fn v2_output(app: &TestApp, id_or_alias: &str) -> Value {
    let body = json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                                  "data": instance()["instances"][0]}]});
    let res = app
        .post_json(&format!("/v2/models/{id_or_alias}/infer"), &body)
        .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    res.json::<Value>().await.unwrap()["outputs"][0]["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_serves_its_saved_model_everywhere_an_id_is_accepted_and_moves_at_once() {
    let app = spawn_app().await;
    let (a, b) = two_saved_models(&app).await;
    let (pa, pb) = (probabilities(&app, &a).await, probabilities(&app, &b).await);
    assert_ne!(pa, pb, "the two models must tell apart");

    let res = put(&app, "production", &json!({"saved_model_id": a})).await;
    assert_eq!(res.status(), 201);
    let alias: Value = res.json().await.unwrap();
    assert_eq!(alias["name"], "production");
    assert_eq!(alias["saved_model_id"], a);
    assert_eq!(probabilities(&app, "production").await, pa);
    assert_eq!(v2_output(&app, "production").await, v2_output(&app, &a).await);
    let meta: Value = app.get("/v2/models/production").await.json().await.unwrap();
    assert_eq!(meta["name"], "production");
    assert_eq!(app.get("/v2/models/production/ready").await.status(), 200);
    let ev = app
        .post_json(
            "/v1/saved-models/production/evaluate",
            &json!({"dataset_id": app.get("/v1/datasets").await.json::<Value>().await.unwrap()["items"][0]["id"]}),
        )
        .await;
    assert_eq!(ev.status(), 200, "{}", ev.text().await.unwrap());

    // Each move is visible to the very next request: both models are warm in the cache, and
    // the alias never answers with the one it left.
    for i in 0..20 {
        let (to, want) = if i % 2 == 0 { (&b, &pb) } else { (&a, &pa) };
        let res = put(&app, "production", &json!({"saved_model_id": to})).await;
        assert_eq!(res.status(), 200);
        assert_eq!(&probabilities(&app, "production").await, want, "move {i}");
    }
    let got: Value = app.get("/v1/aliases/production").await.json().await.unwrap();
    assert_eq!(got["saved_model_id"], a);

    // History: newest first, the creation and all 20 moves.
    let h: Value = app
        .get("/v1/aliases/production/history?limit=500")
        .await
        .json()
        .await
        .unwrap();
    let items = h["items"].as_array().unwrap();
    assert_eq!(items.len(), 21);
    assert_eq!(items[0]["saved_model_id"], a);
    assert_eq!(items[1]["saved_model_id"], b);
    assert_eq!(items[20]["saved_model_id"], a);

    // A saved model an alias points at cannot be deleted; the alias can, and its history stays.
    let problem = assert_problem(app.delete(&format!("/v1/saved-models/{a}")).await, 409).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("production"),
        "{problem}"
    );
    put(&app, "staging", &json!({"saved_model_id": b})).await;
    let list: Value = app
        .get(&format!("/v1/aliases?saved_model_id={b}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["name"], "staging");
    let list: Value = app.get("/v1/aliases?limit=1").await.json().await.unwrap();
    assert_eq!(list["items"][0]["name"], "production");
    let next = list["next"].as_str().unwrap();
    let list: Value = app
        .get(&format!("/v1/aliases?limit=1&after={next}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"][0]["name"], "staging");
    assert_eq!(list["next"], Value::Null);

    assert_eq!(app.delete("/v1/aliases/production").await.status(), 204);
    assert_problem(app.get("/v1/aliases/production").await, 404).await;
    assert_problem(
        app.post_json("/v1/saved-models/production/predict", &instance())
            .await,
        404,
    )
    .await;
    let h: Value = app
        .get("/v1/aliases/production/history")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(h["items"][0]["saved_model_id"], Value::Null);
    assert_eq!(h["items"].as_array().unwrap().len(), 22);
    assert_eq!(app.delete(&format!("/v1/saved-models/{a}")).await.status(), 204);
}

#[tokio::test]
async fn alias_names_and_targets_are_checked() {
    let app = spawn_app().await;
    for name in [
        "9lives",
        "has%20space",
        "0193b3c2-7f3e-7c1a-9d2e-1234567890ab",
        &"a".repeat(65),
    ] {
        let problem = assert_problem(put(&app, name, &json!({"saved_model_id": "x"})).await, 422).await;
        assert_eq!(error_fields(&problem), ["name"], "{name}");
    }
    assert_problem(put(&app, "prod", &json!({"saved_model_id": "nope"})).await, 404).await;
    assert_problem(put(&app, "prod", &json!({"model": "nope"})).await, 422).await;
    assert_problem(app.get("/v1/aliases/prod").await, 404).await;
    assert_problem(app.get("/v1/aliases/prod/history").await, 404).await;
    assert_problem(app.delete("/v1/aliases/prod").await, 404).await;
}
