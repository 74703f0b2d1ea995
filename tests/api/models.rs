//! `/v1/models`: create, list, get, delete, append, summary, and every way a spec can be wrong.

use serde_json::{Value, json};

use super::support::{assert_problem, book_model, error_fields, spawn_app};

#[tokio::test]
async fn creating_the_book_model_returns_201_with_names_shapes_and_params() {
    let app = spawn_app().await;
    let res = app.post_json("/v1/models", &book_model()).await;
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let model: Value = res.json().await.unwrap();
    assert_eq!(location, format!("/v1/models/{}", model["id"].as_str().unwrap()));
    let names: Vec<_> = model["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].clone())
        .collect();
    assert_eq!(
        names,
        [
            json!("flatten"),
            json!("dense"),
            json!("dropout"),
            json!("dense_1")
        ]
    );
    assert_eq!(model["output_shape"], json!([10]));
    assert_eq!(
        model["params"],
        json!({"total": 79510, "trainable": 79510, "non_trainable": 0})
    );
    assert_eq!(model["layers"][1]["use_bias"], json!(true));
    assert_eq!(model["locked"], json!(false));

    let fetched: Value = app.get(&location).await.json().await.unwrap();
    assert_eq!(fetched, model);
}

#[tokio::test]
async fn summary_is_json_rows_or_a_keras_table_with_accept_text_plain() {
    let app = spawn_app().await;
    let model: Value = app
        .post_json("/v1/models", &book_model())
        .await
        .json()
        .await
        .unwrap();
    let id = model["id"].as_str().unwrap();

    let summary: Value = app
        .get(&format!("/v1/models/{id}/summary"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(summary["total_params"], 79510);
    assert_eq!(summary["rows"][1]["name"], "dense");
    assert_eq!(summary["rows"][1]["output_shape"], json!([null, 100]));
    assert_eq!(summary["rows"][1]["params"], 78500);

    let res = app
        .client
        .get(app.url(&format!("/v1/models/{id}/summary")))
        .header("accept", "text/plain")
        .send()
        .await
        .unwrap();
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let table = res.text().await.unwrap();
    assert!(table.contains("Model: \"fashion-mlp\""), "{table}");
    assert!(table.contains("dense_1 (Dense)"), "{table}");
    assert!(table.contains("79,510"), "{table}");
}

#[tokio::test]
async fn every_bad_field_of_a_spec_is_listed_in_one_422() {
    let app = spawn_app().await;
    let spec = json!({
        "name": "bad",
        "input_shape": [28, 0],
        "layers": [
            {"type": "flatten"},
            {"type": "dense", "units": 0, "activation": "gelu"},
            {"type": "dropout", "rate": 1.5},
            {"type": "conv2d"},
            {"type": "dense", "units": 10, "colour": "red"}
        ]
    });
    let problem = assert_problem(app.post_json("/v1/models", &spec).await, 422).await;
    let fields = error_fields(&problem);
    for expected in [
        "input_shape[1]",
        "layers[1].units",
        "layers[1].activation",
        "layers[2].rate",
        "layers[3].type",
        "layers[4].colour",
    ] {
        assert!(
            fields.contains(&expected.to_string()),
            "{expected} missing in {fields:?}"
        );
    }

    // Field-level checks done by the engine: dropout rate and the dense-after-2D rule.
    let spec = json!({"name": "m", "input_shape": [28, 28],
        "layers": [{"type": "dense", "units": 4}, {"type": "dropout", "rate": 1.5}]});
    let problem = assert_problem(app.post_json("/v1/models", &spec).await, 422).await;
    let fields = error_fields(&problem);
    assert!(fields.contains(&"layers[1].rate".to_string()), "{fields:?}");
    assert!(fields.contains(&"layers[0]".to_string()), "{fields:?}");
}

#[tokio::test]
async fn a_model_over_the_parameter_cap_is_rejected_with_422() {
    let app = spawn_app().await;
    let spec = json!({"name": "huge", "input_shape": [100000],
        "layers": [{"type": "dense", "units": 100000}]});
    let problem = assert_problem(app.post_json("/v1/models", &spec).await, 422).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("limit of 50000000"),
        "{problem}"
    );
    assert_eq!(error_fields(&problem), ["layers"]);
}

#[tokio::test]
async fn appending_a_layer_names_it_and_updates_shapes() {
    let app = spawn_app().await;
    let spec = json!({"name": "m", "input_shape": [4], "layers": [{"type": "dense", "units": 8}]});
    let model: Value = app.post_json("/v1/models", &spec).await.json().await.unwrap();
    let id = model["id"].as_str().unwrap();
    let res = app
        .post_json(
            &format!("/v1/models/{id}/layers"),
            &json!({"type": "dense", "units": 3, "activation": "softmax"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let model: Value = res.json().await.unwrap();
    assert_eq!(model["layers"][1]["name"], "dense_1");
    assert_eq!(model["output_shape"], json!([3]));
    assert_eq!(model["params"]["total"], 4 * 8 + 8 + 8 * 3 + 3);

    let bad = app
        .post_json(
            &format!("/v1/models/{id}/layers"),
            &json!({"type": "dropout", "rate": -1}),
        )
        .await;
    let problem = assert_problem(bad, 422).await;
    assert_eq!(error_fields(&problem), ["layers[2].rate"]);
}

#[tokio::test]
async fn appending_to_a_model_a_job_used_returns_409() {
    let app = spawn_app().await;
    let model: Value = app
        .post_json("/v1/models", &book_model())
        .await
        .json()
        .await
        .unwrap();
    let id = model["id"].as_str().unwrap();
    let store = app.open_store().await;
    fitd::store::models::lock(&store, id).await.unwrap();
    let res = app
        .post_json(&format!("/v1/models/{id}/layers"), &json!({"type": "flatten"}))
        .await;
    assert_problem(res, 409).await;
    let model: Value = app.get(&format!("/v1/models/{id}")).await.json().await.unwrap();
    assert_eq!(model["locked"], true);
    assert_eq!(model["layers"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn models_list_pages_with_limit_and_after() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut spec = book_model();
        spec["name"] = json!(format!("m{i}"));
        let m: Value = app.post_json("/v1/models", &spec).await.json().await.unwrap();
        ids.push(m["id"].as_str().unwrap().to_string());
    }
    let mut seen = Vec::new();
    let mut path = "/v1/models?limit=2".to_string();
    loop {
        let page: Value = app.get(&path).await.json().await.unwrap();
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/models?limit=2&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert_problem(app.get("/v1/models?limit=0").await, 422).await;
    assert_problem(app.get("/v1/models?after=nope").await, 422).await;
}

#[tokio::test]
async fn deleted_models_are_gone_and_unknown_ids_are_404() {
    let app = spawn_app().await;
    let model: Value = app
        .post_json("/v1/models", &book_model())
        .await
        .json()
        .await
        .unwrap();
    let id = model["id"].as_str().unwrap();
    assert_eq!(app.delete(&format!("/v1/models/{id}")).await.status(), 204);
    assert_problem(app.get(&format!("/v1/models/{id}")).await, 404).await;
    assert_problem(app.delete(&format!("/v1/models/{id}")).await, 404).await;
    assert_problem(app.get("/v1/models/unknown/summary").await, 404).await;
}

#[tokio::test]
async fn models_survive_a_restart() {
    let app = spawn_app().await;
    let model: Value = app
        .post_json("/v1/models", &book_model())
        .await
        .json()
        .await
        .unwrap();
    let app = app.restart().await;
    let again: Value = app
        .get(&format!("/v1/models/{}", model["id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again, model);
}
