//! `/v1/saved-models` and `POST /v1/models/{id}/weights`: uploads, checkpoints, imports, predictions
//! (JSON and PNG), weights and export round trips to the bit, deletes, and every bad input.

use fitd::domain::model::ModelSpec;
use fitd::nn::{Model, NamedTensor};
use fitd::serving::{formats, npy};
use ndarray::Array2;
use serde_json::{Value, json};

use super::support::{
    TestApp, assert_problem, book_model, error_fields, python_with, run_python, spawn_app, spawn_app_with,
};

/// Creates the architecture `spec_json` and returns its id and the engine model of seed `seed`.
pub async fn create_model(app: &TestApp, spec_json: &Value, seed: u64) -> (String, Model) {
    let res = app.post_json("/v1/models", spec_json).await;
    assert_eq!(res.status(), 201);
    let view: Value = res.json().await.unwrap();
    let spec: ModelSpec = serde_json::from_value(json!({
        "input_shape": spec_json["input_shape"], "layers": spec_json["layers"]
    }))
    .unwrap();
    let model = Model::new(&spec.to_nn(), seed).unwrap();
    (view["id"].as_str().unwrap().to_string(), model)
}

pub async fn post_bytes(app: &TestApp, path: &str, bytes: Vec<u8>) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .unwrap()
}

/// Uploads the weights of `model` for architecture `model_id`; returns the saved model view.
pub async fn upload(app: &TestApp, model_id: &str, model: &Model) -> Value {
    let res = post_bytes(
        app,
        &format!("/v1/models/{model_id}/weights"),
        formats::encode_weights(&model.tensors()),
    )
    .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    res.json().await.unwrap()
}

/// The book model with seeded weights, uploaded: `(saved model id, engine model)`.
pub async fn book_saved_model(app: &TestApp) -> (String, Model) {
    let (model_id, model) = create_model(app, &book_model(), 7).await;
    let saved = upload(app, &model_id, &model).await;
    (saved["id"].as_str().unwrap().to_string(), model)
}

/// Deterministic pixel-like inputs 0..=255, mostly zero like MNIST.
pub fn pixels(n: usize, features: usize, seed: u32) -> Array2<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    Array2::from_shape_simple_fn((n, features), || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        if s.is_multiple_of(3) {
            (s >> 8) as f32 % 256.0
        } else {
            0.0
        }
    })
}

fn rows_json(x: &Array2<f32>, nested: Option<(usize, usize)>) -> Value {
    Value::Array(
        x.rows()
            .into_iter()
            .map(|r| match nested {
                None => json!(r.to_vec()),
                Some((h, w)) => json!(
                    r.to_vec()
                        .chunks(w)
                        .take(h)
                        .map(|c| c.to_vec())
                        .collect::<Vec<_>>()
                ),
            })
            .collect(),
    )
}

async fn predict(app: &TestApp, id: &str, instances: Value) -> Value {
    let res = app
        .post_json(
            &format!("/v1/saved-models/{id}/predict"),
            &json!({ "instances": instances }),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("server-timing"));
    res.json().await.unwrap()
}

fn probabilities(preds: &Value) -> Vec<Vec<f32>> {
    preds["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["probabilities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

fn bits(rows: &[Vec<f32>]) -> Vec<Vec<u32>> {
    rows.iter()
        .map(|r| r.iter().map(|v| v.to_bits()).collect())
        .collect()
}

fn engine_rows(model: &Model, x: &Array2<f32>) -> Vec<Vec<f32>> {
    model
        .predict(x.view())
        .unwrap()
        .rows()
        .into_iter()
        .map(|r| r.to_vec())
        .collect()
}

#[tokio::test]
async fn uploaded_weights_predict_exactly_like_the_engine_nested_or_flat() {
    let app = spawn_app().await;
    let (id, model) = book_saved_model(&app).await;

    let x = pixels(5, 784, 1);
    let nested = predict(&app, &id, rows_json(&x, Some((28, 28)))).await;
    let flat = predict(&app, &id, rows_json(&x, None)).await;
    assert_eq!(nested, flat);
    let want = engine_rows(&model, &x);
    assert_eq!(bits(&probabilities(&nested)), bits(&want));
    for (p, w) in nested["predictions"].as_array().unwrap().iter().zip(&want) {
        let argmax = (0..10).fold(0, |b, i| if w[i] > w[b] { i } else { b });
        assert_eq!(p["class"], argmax);
    }

    // A batch big enough to be split over the cores gives the bits of one engine call.
    let big = pixels(600, 784, 2);
    let got = predict(&app, &id, rows_json(&big, None)).await;
    assert_eq!(bits(&probabilities(&got)), bits(&engine_rows(&model, &big)));

    // One row takes the engine's single-row path; the server must too.
    let one = x.slice(ndarray::s![0..1, ..]).to_owned();
    let single = predict(&app, &id, rows_json(&one, Some((28, 28)))).await;
    assert_eq!(bits(&probabilities(&single)), bits(&engine_rows(&model, &one)));
}

#[tokio::test]
async fn a_warm_model_predicts_without_reading_sqlite() {
    let app = spawn_app().await;
    let (id, model) = book_saved_model(&app).await;
    let x = pixels(1, 784, 6);
    let before = predict(&app, &id, rows_json(&x, None)).await;
    // Take the row away behind the server's back: only the cache can answer now.
    let store = app.open_store().await;
    sqlx::query("DELETE FROM saved_models WHERE id = $1")
        .bind(&id)
        .execute(&store.pool)
        .await
        .unwrap();
    let after = predict(&app, &id, rows_json(&x, None)).await;
    assert_eq!(before, after);
    assert_eq!(bits(&probabilities(&after)), bits(&engine_rows(&model, &x)));
}

#[tokio::test]
async fn saved_models_are_listed_fetched_and_deleted() {
    let app = spawn_app().await;
    let (id, _) = book_saved_model(&app).await;
    let got: Value = app
        .get(&format!("/v1/saved-models/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["source"], "weights_upload");
    assert_eq!(got["job_id"], Value::Null);
    assert_eq!(got["epoch"], Value::Null);
    assert_eq!(got["metrics"], json!({}));
    assert_eq!(got["input_shape"], json!([28, 28]));
    assert_eq!(got["output_kind"], "classifier");
    assert!(got["size_bytes"].as_i64().unwrap() > 79_510 * 4);
    // The architecture is frozen once weights exist for it.
    let model: Value = app
        .get(&format!("/v1/models/{}", got["model_id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(model["locked"], true);

    let (id2, _) = book_saved_model(&app).await;
    let page: Value = app.get("/v1/saved-models?limit=1").await.json().await.unwrap();
    assert_eq!(page["items"][0]["id"], id.as_str());
    let after = page["next"].as_str().unwrap();
    let page2: Value = app
        .get(&format!("/v1/saved-models?limit=1&after={after}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page2["items"][0]["id"], id2.as_str());
    assert_eq!(page2["next"], Value::Null);

    // Warm the cache, delete, and the model must be gone from predictions too.
    predict(&app, &id, rows_json(&pixels(1, 784, 2), None)).await;
    assert_eq!(app.delete(&format!("/v1/saved-models/{id}")).await.status(), 204);
    assert_problem(app.get(&format!("/v1/saved-models/{id}")).await, 404).await;
    let res = app
        .post_json(
            &format!("/v1/saved-models/{id}/predict"),
            &json!({"instances": [vec![0.0; 784]]}),
        )
        .await;
    assert_problem(res, 404).await;
    assert_problem(app.delete(&format!("/v1/saved-models/{id}")).await, 404).await;
}

#[tokio::test]
async fn deleting_a_saved_model_a_running_job_continues_from_is_409() {
    let app = spawn_app().await;
    let (id, _) = book_saved_model(&app).await;
    let store = app.open_store().await;
    let now = fitd::store::now_rfc3339();
    sqlx::query(
        "INSERT INTO jobs (id, model_id, dataset_id, status, request, seed, epochs, created_at, updated_at) \
         VALUES ('job-1', 'm', 'd', 'running', $1, 1, 3, $2, $3)",
    )
    .bind(json!({"initial_weights": id}).to_string())
    .bind(&now)
    .bind(&now)
    .execute(&store.pool)
    .await
    .unwrap();
    let problem = assert_problem(app.delete(&format!("/v1/saved-models/{id}")).await, 409).await;
    assert!(problem["detail"].as_str().unwrap().contains("job-1"), "{problem}");
    sqlx::query("UPDATE jobs SET status = 'succeeded' WHERE id = 'job-1'")
        .execute(&store.pool)
        .await
        .unwrap();
    assert_eq!(app.delete(&format!("/v1/saved-models/{id}")).await.status(), 204);
}

#[tokio::test]
async fn weights_download_then_load_weights_gives_identical_bytes_and_predictions() {
    let app = spawn_app().await;
    let (id, _) = book_saved_model(&app).await;
    let res = app.get(&format!("/v1/saved-models/{id}/weights")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/octet-stream");
    let bytes = res.bytes().await.unwrap().to_vec();
    let (tensors, meta) = formats::decode(&bytes).unwrap();
    assert_eq!(meta["format"], formats::WEIGHTS_FORMAT);
    let names: Vec<_> = tensors
        .iter()
        .map(|t| (t.name.as_str(), t.shape.clone()))
        .collect();
    assert_eq!(
        names,
        [
            ("dense.bias", vec![100]),
            ("dense.kernel", vec![784, 100]),
            ("dense_1.bias", vec![10]),
            ("dense_1.kernel", vec![100, 10])
        ]
    );

    let saved: Value = app
        .get(&format!("/v1/saved-models/{id}"))
        .await
        .json()
        .await
        .unwrap();
    let model_id = saved["model_id"].as_str().unwrap();
    let res = post_bytes(&app, &format!("/v1/models/{model_id}/weights"), bytes.clone()).await;
    assert_eq!(res.status(), 201);
    assert!(
        res.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/v1/saved-models/")
    );
    let copy: Value = res.json().await.unwrap();
    let copy_id = copy["id"].as_str().unwrap();
    let again = app
        .get(&format!("/v1/saved-models/{copy_id}/weights"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(again.to_vec(), bytes);

    let x = rows_json(&pixels(3, 784, 3), Some((28, 28)));
    assert_eq!(
        predict(&app, &id, x.clone()).await,
        predict(&app, copy_id, x).await
    );
}

#[tokio::test]
async fn weights_upload_as_multipart_part_file_works_too() {
    let app = spawn_app().await;
    let (model_id, model) = create_model(&app, &book_model(), 3).await;
    let part =
        reqwest::multipart::Part::bytes(formats::encode_weights(&model.tensors())).file_name("w.safetensors");
    let res = app
        .client
        .post(app.url(&format!("/v1/models/{model_id}/weights")))
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

#[tokio::test]
async fn mismatching_weights_are_a_422_listing_every_tensor() {
    let app = spawn_app().await;
    let (model_id, model) = create_model(&app, &book_model(), 3).await;
    let mut tensors = model.tensors();
    tensors.retain(|t| t.name != "dense_1.bias");
    let bias = tensors.iter().position(|t| t.name == "dense.bias").unwrap();
    tensors[bias] = NamedTensor {
        name: "dense.bias".into(),
        shape: vec![99],
        data: vec![0.0; 99],
    };
    tensors.push(NamedTensor {
        name: "fc1.weight".into(),
        shape: vec![1],
        data: vec![1.0],
    });
    let res = post_bytes(
        &app,
        &format!("/v1/models/{model_id}/weights"),
        formats::encode_weights(&tensors),
    )
    .await;
    let problem = assert_problem(res, 422).await;
    let mut fields = error_fields(&problem);
    fields.sort();
    assert_eq!(fields, ["dense.bias", "dense_1.bias", "fc1.weight"], "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("expected shape [100], got [99]"), "{detail}");
    assert!(detail.contains("dense_1.bias: missing"), "{detail}");
    assert!(
        detail.contains("fc1.weight: not a weight of this model"),
        "{detail}"
    );

    // float64 tensors are named too.
    let data = vec![0u8; 16];
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F64, vec![2], &data).unwrap();
    let f64_file = safetensors::serialize([("dense.bias", view)], None).unwrap();
    let problem = assert_problem(
        post_bytes(&app, &format!("/v1/models/{model_id}/weights"), f64_file).await,
        422,
    )
    .await;
    assert_eq!(error_fields(&problem), ["dense.bias"]);
    assert!(problem["detail"].as_str().unwrap().contains("F64"), "{problem}");

    let problem = assert_problem(
        post_bytes(
            &app,
            &format!("/v1/models/{model_id}/weights"),
            b"not safetensors at all".to_vec(),
        )
        .await,
        422,
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("not a safetensors file"),
        "{problem}"
    );
    assert_problem(
        post_bytes(&app, &format!("/v1/models/{model_id}/weights"), Vec::new()).await,
        422,
    )
    .await;
    let res = post_bytes(
        &app,
        "/v1/models/nope/weights",
        formats::encode_weights(&model.tensors()),
    )
    .await;
    assert_problem(res, 404).await;
    // Nothing was created by the refused uploads.
    let page: Value = app.get("/v1/saved-models").await.json().await.unwrap();
    assert_eq!(page["items"], json!([]));
}

/// A model with every preprocessing layer: rescaling, a fitted PCA, dense layers.
async fn pca_saved_model(app: &TestApp) -> (String, Model) {
    let spec = json!({
        "name": "pca-mlp", "input_shape": [6, 6],
        "layers": [
            {"type": "flatten"},
            {"type": "rescaling", "scale": 1.0 / 255.0},
            {"type": "pca", "n_components": 4},
            {"type": "dense", "units": 8, "activation": "tanh"},
            {"type": "dense", "units": 3, "activation": "softmax"}
        ]
    });
    let (model_id, mut model) = create_model(app, &spec, 11).await;
    let mut tensors = model.tensors();
    let comps: Vec<f32> = (0..4 * 36).map(|i| ((i * 7 % 13) as f32 - 6.0) / 13.0).collect();
    tensors.push(NamedTensor {
        name: "pca.mean".into(),
        shape: vec![36],
        data: (0..36).map(|i| i as f32 / 72.0).collect(),
    });
    tensors.push(NamedTensor {
        name: "pca.components".into(),
        shape: vec![4, 36],
        data: comps,
    });
    tensors.push(NamedTensor {
        name: "pca.explained_variance_ratio".into(),
        shape: vec![4],
        data: vec![0.4, 0.3, 0.2, 0.1],
    });
    model.load_tensors(&tensors).unwrap();
    let saved = upload(app, &model_id, &model).await;
    (saved["id"].as_str().unwrap().to_string(), model)
}

#[tokio::test]
async fn export_then_import_rebuilds_the_model_with_bit_identical_predictions() {
    let app = spawn_app().await;
    for (id, model, features) in [
        {
            let (id, m) = book_saved_model(&app).await;
            (id, m, 784)
        },
        {
            let (id, m) = pca_saved_model(&app).await;
            (id, m, 36)
        },
    ] {
        let res = app.get(&format!("/v1/saved-models/{id}/export")).await;
        assert_eq!(res.status(), 200);
        let file = res.bytes().await.unwrap().to_vec();
        let (_, meta) = formats::decode(&file).unwrap();
        assert_eq!(meta["format"], formats::EXPORT_FORMAT);
        let spec: Value = serde_json::from_str(&meta["spec"]).unwrap();
        assert_eq!(spec["layers"][0]["name"], "flatten");
        if features == 36 {
            let pre: Value = serde_json::from_str(&meta["preprocessing"]).unwrap();
            assert_eq!(pre["pca"]["n_components"], 4);
            assert_eq!(pre["rescaling"]["scale"], 1.0 / 255.0);
        }

        let res = post_bytes(&app, "/v1/saved-models/import", file.clone()).await;
        assert_eq!(res.status(), 201);
        let imported: Value = res.json().await.unwrap();
        assert_eq!(imported["source"], "import");
        let new_id = imported["id"].as_str().unwrap();
        let arch: Value = app
            .get(&format!("/v1/models/{}", imported["model_id"].as_str().unwrap()))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(arch["locked"], true);

        let x = pixels(4, features, 9);
        let a = predict(&app, &id, rows_json(&x, None)).await;
        let b = predict(&app, new_id, rows_json(&x, None)).await;
        assert_eq!(bits(&probabilities(&a)), bits(&probabilities(&b)));
        assert_eq!(bits(&probabilities(&a)), bits(&engine_rows(&model, &x)));
        // Exporting the import gives the same file.
        let file2 = app
            .get(&format!("/v1/saved-models/{new_id}/export"))
            .await
            .bytes()
            .await
            .unwrap();
        assert_eq!(
            formats::decode(&file2).unwrap().0,
            formats::decode(&file).unwrap().0
        );
    }
}

#[tokio::test]
async fn importing_anything_but_a_fitd_export_is_a_422() {
    let app = spawn_app().await;
    let (id, _) = book_saved_model(&app).await;
    let weights = app
        .get(&format!("/v1/saved-models/{id}/weights"))
        .await
        .bytes()
        .await
        .unwrap();
    let problem = assert_problem(
        post_bytes(&app, "/v1/saved-models/import", weights.to_vec()).await,
        422,
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("without an architecture"),
        "{problem}"
    );

    let problem = assert_problem(
        post_bytes(&app, "/v1/saved-models/import", b"\x08\0\0\0\0\0\0\0{}".to_vec()).await,
        422,
    )
    .await;
    assert_eq!(error_fields(&problem), ["file"]);

    // An export whose weights were swapped for a foreign model's.
    let export = app
        .get(&format!("/v1/saved-models/{id}/export"))
        .await
        .bytes()
        .await
        .unwrap();
    let (mut tensors, meta) = formats::decode(&export).unwrap();
    tensors[0].name = "linear.weight".into();
    let forged = formats::encode(&tensors, meta.clone());
    let problem = assert_problem(post_bytes(&app, "/v1/saved-models/import", forged).await, 422).await;
    assert!(
        error_fields(&problem).contains(&"linear.weight".to_string()),
        "{problem}"
    );

    // An export whose spec breaks the rules.
    let mut bad_meta = meta.clone();
    bad_meta.insert(
        "spec".into(),
        json!({"input_shape": [28, 28], "layers": [{"type": "dropout", "rate": 2.0}]}).to_string(),
    );
    let (t, _) = formats::decode(&export).unwrap();
    let problem = assert_problem(
        post_bytes(&app, "/v1/saved-models/import", formats::encode(&t, bad_meta)).await,
        422,
    )
    .await;
    assert_eq!(error_fields(&problem), ["spec.layers[0].rate"], "{problem}");
}

#[tokio::test]
async fn png_uploads_predict_like_their_pixels_through_rescaling() {
    let app = spawn_app().await;
    let spec = json!({
        "name": "png-mlp", "input_shape": [28, 28],
        "layers": [
            {"type": "rescaling", "scale": 1.0 / 255.0},
            {"type": "flatten"},
            {"type": "dense", "units": 32, "activation": "relu"},
            {"type": "dense", "units": 10, "activation": "softmax"}
        ]
    });
    let (model_id, model) = create_model(&app, &spec, 5).await;
    let saved = upload(&app, &model_id, &model).await;
    let id = saved["id"].as_str().unwrap();
    let x = pixels(2, 784, 4);
    let gray: Vec<Vec<u8>> = x
        .rows()
        .into_iter()
        .map(|r| r.iter().map(|&v| v as u8).collect())
        .collect();

    let send = |parts: Vec<(&'static str, Vec<u8>)>| {
        let mut form = reqwest::multipart::Form::new();
        for (name, bytes) in parts {
            form = form.part(name, reqwest::multipart::Part::bytes(bytes).file_name("x.png"));
        }
        app.client
            .post(app.url(&format!("/v1/saved-models/{id}/predict")))
            .multipart(form)
            .send()
    };
    let pngs: Vec<_> = gray
        .iter()
        .map(|g| fitd::serving::image::encode_gray(g, 28, 28))
        .collect();
    let res = send(vec![("image", pngs[0].clone()), ("image", pngs[1].clone())])
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let got: Value = res.json().await.unwrap();
    assert_eq!(bits(&probabilities(&got)), bits(&engine_rows(&model, &x)));

    // RGB with equal channels is the same gray image.
    let rgb: Vec<u8> = gray[0].iter().flat_map(|&g| [g, g, g]).collect();
    let rgb_png = fitd::serving::image::encode(&rgb, 28, 28, png::ColorType::Rgb);
    let res = send(vec![("image", rgb_png)]).await.unwrap();
    let got: Value = res.json().await.unwrap();
    let one = x.slice(ndarray::s![0..1, ..]).to_owned();
    assert_eq!(bits(&probabilities(&got)), bits(&engine_rows(&model, &one)));

    let small = fitd::serving::image::encode_gray(&[0; 27 * 28], 27, 28);
    let problem = assert_problem(send(vec![("image", small)]).await.unwrap(), 422).await;
    assert_eq!(error_fields(&problem), ["image[0]"]);
    assert!(problem["detail"].as_str().unwrap().contains("27x28"), "{problem}");
    let problem = assert_problem(
        send(vec![("image", b"GIF89a not a png".to_vec())]).await.unwrap(),
        422,
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("not a PNG"),
        "{problem}"
    );
    assert_problem(send(vec![("picture", pngs[0].clone())]).await.unwrap(), 422).await;

    // A model whose input is not 2-D cannot take images.
    let (flat_id, flat_model) = create_model(
        &app,
        &json!({"name": "flat", "input_shape": [4], "layers": [{"type": "dense", "units": 2}]}),
        1,
    )
    .await;
    let flat_saved = upload(&app, &flat_id, &flat_model).await;
    let res = app
        .client
        .post(app.url(&format!(
            "/v1/saved-models/{}/predict",
            flat_saved["id"].as_str().unwrap()
        )))
        .multipart(
            reqwest::multipart::Form::new().part("image", reqwest::multipart::Part::bytes(pngs[0].clone())),
        )
        .send()
        .await
        .unwrap();
    let problem = assert_problem(res, 422).await;
    assert!(problem["detail"].as_str().unwrap().contains("2-D"), "{problem}");
}

#[tokio::test]
async fn bad_predict_inputs_are_problems_naming_the_problem() {
    let app = spawn_app_with(|c| c.max_predict_rows = 3).await;
    let (id, _) = book_saved_model(&app).await;
    let path = format!("/v1/saved-models/{id}/predict");
    let cases = [
        (json!({"instances": [vec![0.0; 783]]}), "got [783]", "instances"),
        (
            json!({"instances": [vec![vec![0.0; 28]; 27]]}),
            "got [27, 28]",
            "instances",
        ),
        (json!({"instances": []}), "at least one instance", "instances"),
        (
            json!({"instances": vec![vec![0.0; 784]; 4]}),
            "holds 4 instances; at most 3",
            "instances",
        ),
        (
            json!({"instances": [vec![0.0; 784], vec![0.0; 10]]}),
            "rectangular",
            "",
        ),
        (json!({"instances": [["a"]]}), "invalid type", ""),
        (json!({"instance": [vec![0.0; 784]]}), "unknown field", "instance"),
    ];
    for (body, needle, field) in cases {
        let problem = assert_problem(app.post_json(&path, &body).await, 422).await;
        assert!(
            problem["detail"].as_str().unwrap().contains(needle),
            "{needle}: {problem}"
        );
        if !field.is_empty() {
            assert_eq!(error_fields(&problem), [field], "{problem}");
        }
    }
    // A value beyond float32 range becomes infinity: refused, naming the instance and feature.
    let mut row = vec![json!(0.0); 784];
    row[5] = json!(1e39);
    let problem = assert_problem(
        app.post_json(&path, &json!({"instances": [vec![0.0; 784], row]}))
            .await,
        422,
    )
    .await;
    assert_eq!(error_fields(&problem), ["instances[1]"]);
    assert!(
        problem["detail"].as_str().unwrap().contains("feature 5"),
        "{problem}"
    );
    // NaN is not JSON.
    let res = app
        .client
        .post(app.url(&path))
        .header("content-type", "application/json")
        .body(format!("{{\"instances\": [[NaN{}]]}}", ", 0".repeat(783)))
        .send()
        .await
        .unwrap();
    assert_problem(res, 400).await;
    let res = app
        .client
        .post(app.url(&path))
        .header("content-type", "text/csv")
        .body("1,2,3")
        .send()
        .await
        .unwrap();
    assert_problem(res, 415).await;
    let res = app
        .post_json(
            "/v1/saved-models/nope/predict",
            &json!({"instances": [vec![0.0; 784]]}),
        )
        .await;
    let problem = assert_problem(res, 404).await;
    assert!(problem["detail"].as_str().unwrap().contains("nope"), "{problem}");
}

#[tokio::test]
async fn binary_and_regression_models_shape_their_predictions() {
    let app = spawn_app().await;
    let (bin_id, bin) = create_model(
        &app,
        &json!({"name": "bin", "input_shape": [3], "layers": [{"type": "dense", "units": 1, "activation": "sigmoid"}]}),
        2,
    )
    .await;
    let bin_saved = upload(&app, &bin_id, &bin).await;
    assert_eq!(bin_saved["output_kind"], "binary");
    let x = ndarray::array![[1.0f32, -2.0, 0.5], [-1.0, 2.0, 0.25]];
    let got = predict(&app, bin_saved["id"].as_str().unwrap(), rows_json(&x, None)).await;
    let want = engine_rows(&bin, &x);
    for (p, w) in got["predictions"].as_array().unwrap().iter().zip(&want) {
        assert_eq!(p["probability"].as_f64().unwrap() as f32, w[0]);
        assert_eq!(p["class"], u8::from(w[0] >= 0.5));
    }

    let (reg_id, reg) = create_model(
        &app,
        &json!({"name": "reg", "input_shape": [1], "layers": [{"type": "dense", "units": 2}]}),
        2,
    )
    .await;
    let reg_saved = upload(&app, &reg_id, &reg).await;
    // One-feature models take bare numbers as instances.
    let got = predict(&app, reg_saved["id"].as_str().unwrap(), json!([3.0, -1.5])).await;
    let want = engine_rows(&reg, &ndarray::array![[3.0f32], [-1.5]]);
    let values: Vec<Vec<f32>> = got["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    assert_eq!(bits(&values), bits(&want));
}

#[tokio::test]
async fn a_saved_model_can_be_made_from_any_stored_checkpoint() {
    let app = spawn_app().await;
    let (model_id, model) = create_model(&app, &book_model(), 21).await;
    // A checkpoint as the trainer stores it: model, optimizer and best-weights tensors.
    let mut state = Vec::new();
    for t in model.tensors() {
        for prefix in ["model/", "opt/", "best/"] {
            let mut t = t.clone();
            if prefix != "model/" {
                t.data.iter_mut().for_each(|v| *v += 1.0);
            }
            state.push(NamedTensor {
                name: format!("{prefix}{}", t.name),
                ..t
            });
        }
    }
    let state = formats::encode(&state, Default::default());
    let store = app.open_store().await;
    let now = fitd::store::now_rfc3339();
    sqlx::query(
        "INSERT INTO jobs (id, model_id, dataset_id, status, request, seed, epochs, created_at, updated_at) \
         VALUES ('job-7', $1, 'd', 'running', '{}', 1, 9, $2, $3)",
    )
    .bind(&model_id)
    .bind(&now)
    .bind(&now)
    .execute(&store.pool)
    .await
    .unwrap();
    for epoch in [2, 4] {
        sqlx::query("INSERT INTO checkpoints (job_id, epoch, state, metrics, created_at) VALUES ('job-7', $1, $2, $3, $4)")
            .bind(epoch)
            .bind(&state)
            .bind(json!({"loss": 0.5, "val_accuracy": 0.75}).to_string())
            .bind(&now)
            .execute(&store.pool)
            .await
            .unwrap();
    }

    let res = app
        .post_json("/v1/saved-models", &json!({"job_id": "job-7", "epoch": 4}))
        .await;
    assert_eq!(res.status(), 201);
    let saved: Value = res.json().await.unwrap();
    assert_eq!(saved["source"], "checkpoint");
    assert_eq!(saved["job_id"], "job-7");
    assert_eq!(saved["epoch"], 4);
    assert_eq!(saved["metrics"], json!({"loss": 0.5, "val_accuracy": 0.75}));
    let x = pixels(2, 784, 8);
    let got = predict(&app, saved["id"].as_str().unwrap(), rows_json(&x, None)).await;
    assert_eq!(bits(&probabilities(&got)), bits(&engine_rows(&model, &x)));
    let filtered: Value = app
        .get("/v1/saved-models?job_id=job-7")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(filtered["items"].as_array().unwrap().len(), 1);

    let problem = assert_problem(
        app.post_json("/v1/saved-models", &json!({"job_id": "job-7", "epoch": 3}))
            .await,
        422,
    )
    .await;
    assert_eq!(error_fields(&problem), ["epoch"]);
    assert!(
        problem["detail"].as_str().unwrap().contains("[2, 4]"),
        "{problem}"
    );
    assert_problem(
        app.post_json("/v1/saved-models", &json!({"job_id": "nope", "epoch": 0}))
            .await,
        404,
    )
    .await;
    assert_problem(
        app.post_json("/v1/saved-models", &json!({"job_id": "job-7"}))
            .await,
        422,
    )
    .await;
}

/// Runs `tests/python/check_safetensors.py` on an exported model: it loads the file with
/// `safetensors.numpy`, runs a numpy forward pass and compares with the server's prediction.
/// Installs numpy and safetensors with pip first when they are missing, as `e2e/run.sh` does for
/// Chromium, so `cargo test` checks the format on a fresh machine too.
#[tokio::test]
async fn python_reproduces_a_prediction_from_the_exported_safetensors() {
    python_with(&["numpy", "safetensors.numpy"], &["numpy", "safetensors"]);
    let app = spawn_app().await;
    for (id, features) in [
        (book_saved_model(&app).await.0, 784),
        (pca_saved_model(&app).await.0, 36),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("model.safetensors");
        let export = app
            .get(&format!("/v1/saved-models/{id}/export"))
            .await
            .bytes()
            .await
            .unwrap();
        std::fs::write(&file, &export).unwrap();
        let x = pixels(3, features, 12);
        let got = predict(&app, &id, rows_json(&x, None)).await;
        let case = dir.path().join("case.json");
        std::fs::write(
            &case,
            json!({"instances": rows_json(&x, None), "predictions": got["predictions"]}).to_string(),
        )
        .unwrap();
        run_python("check_safetensors.py", &[file.as_os_str(), case.as_os_str()]);
    }
}

#[tokio::test]
async fn evaluate_reports_loss_accuracy_and_a_confusion_matrix_like_the_engine() {
    let app = spawn_app().await;
    let res = app
        .post_json("/v1/datasets", &json!({"name": "iris", "source": "iris"}))
        .await;
    assert_eq!(res.status(), 201);
    let dataset: Value = res.json().await.unwrap();
    let dataset_id = dataset["id"].as_str().unwrap();
    let spec = json!({"name": "iris-lr", "input_shape": [4],
        "layers": [{"type": "dense", "units": 3, "activation": "softmax"}]});
    let (model_id, model) = create_model(&app, &spec, 4).await;
    let saved = upload(&app, &model_id, &model).await;
    let id = saved["id"].as_str().unwrap();

    let res = app
        .post_json(
            &format!("/v1/saved-models/{id}/evaluate"),
            &json!({"dataset_id": dataset_id}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let ev: Value = res.json().await.unwrap();
    assert_eq!(ev["n_samples"], 150);
    assert_eq!(ev["loss_name"], "sparse_categorical_crossentropy");

    let store = app.open_store().await;
    let arrays = fitd::store::datasets::load_arrays(&store, dataset_id)
        .await
        .unwrap();
    let fitd::data::Labels::Classes(labels) = arrays.labels else {
        panic!("iris is a classification dataset")
    };
    let targets = fitd::nn::Targets::Classes(labels.clone());
    let want = model
        .evaluate(
            arrays.x.view(),
            &targets,
            fitd::nn::Loss::SparseCategoricalCrossentropy,
            256,
        )
        .unwrap();
    assert_eq!(ev["loss"].as_f64().unwrap(), want.loss);
    assert_eq!(ev["accuracy"].as_f64().unwrap(), want.accuracy.unwrap());
    let cm: Vec<Vec<u64>> = serde_json::from_value(ev["confusion_matrix"].clone()).unwrap();
    assert_eq!(cm.len(), 3);
    let rows: Vec<u64> = cm.iter().map(|r| r.iter().sum()).collect();
    let mut per_class = [0u64; 3];
    labels.iter().for_each(|&l| per_class[l as usize] += 1);
    assert_eq!(rows, per_class);
    let trace: u64 = (0..3).map(|i| cm[i][i]).sum();
    assert_eq!(trace as f64 / 150.0, want.accuracy.unwrap());

    let problem = assert_problem(
        app.post_json(
            &format!("/v1/saved-models/{id}/evaluate"),
            &json!({"dataset_id": "nope"}),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(error_fields(&problem), ["dataset_id"]);
    let (book_id, _) = book_saved_model(&app).await;
    let problem = assert_problem(
        app.post_json(
            &format!("/v1/saved-models/{book_id}/evaluate"),
            &json!({"dataset_id": dataset_id}),
        )
        .await,
        422,
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().contains("784"), "{problem}");
    assert_problem(
        app.post_json(
            "/v1/saved-models/nope/evaluate",
            &json!({"dataset_id": dataset_id}),
        )
        .await,
        404,
    )
    .await;
}

#[tokio::test]
async fn a_trained_job_serves_its_saved_model_and_its_last_checkpoint_gives_the_same_weights() {
    use super::jobs::{digits_dataset, digits_model, job_body, submit, wait_finished};
    let app = spawn_app().await;
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 32).await;
    let job = submit(&app, &job_body(&model, &ds, 3)).await;
    let job_id = job["id"].as_str().unwrap();
    let job = wait_finished(&app, job_id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let saved_id = job["saved_model_id"].as_str().unwrap();

    let saved: Value = app
        .get(&format!("/v1/saved-models/{saved_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(saved["source"], "job");
    assert_eq!(saved["job_id"], job_id);
    assert_eq!(saved["epoch"], 2);
    assert_eq!(saved["model_id"], model.as_str());
    assert!(saved["metrics"]["loss"].is_number(), "{saved}");
    assert_eq!(saved["input_shape"], json!([64]));

    let ev: Value = app
        .post_json(
            &format!("/v1/saved-models/{saved_id}/evaluate"),
            &json!({"dataset_id": ds}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ev["n_samples"], 1797);
    assert!(ev["accuracy"].as_f64().unwrap() > 0.5, "{ev}");

    // The last checkpoint holds the final weights: the saved model made from it predicts the same bits.
    let res = app
        .post_json("/v1/saved-models", &json!({"job_id": job_id, "epoch": 2}))
        .await;
    assert_eq!(res.status(), 201);
    let from_ck: Value = res.json().await.unwrap();
    assert_eq!(from_ck["source"], "checkpoint");
    let x = pixels(7, 64, 3).mapv(|v| (v / 16.0).floor());
    let a = predict(&app, saved_id, rows_json(&x, None)).await;
    let b = predict(&app, from_ck["id"].as_str().unwrap(), rows_json(&x, None)).await;
    assert_eq!(a, b);
    let w1 = app
        .get(&format!("/v1/saved-models/{saved_id}/weights"))
        .await
        .bytes()
        .await
        .unwrap();
    let w2 = app
        .get(&format!(
            "/v1/saved-models/{}/weights",
            from_ck["id"].as_str().unwrap()
        ))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(w1, w2);

    // Training continues from a saved model (initial_weights).
    let mut body = job_body(&model, &ds, 1);
    body["initial_weights"] = json!(saved_id);
    let cont = submit(&app, &body).await;
    let cont = wait_finished(&app, cont["id"].as_str().unwrap()).await;
    assert_eq!(cont["status"], "succeeded", "{cont}");
}

#[tokio::test]
async fn uploads_have_their_own_limit_apart_from_predictions() {
    let app = spawn_app_with(|c| c.max_upload_bytes = 64 * 1024).await;
    let (id, model) = book_saved_model_small(&app).await;
    // A predict body over the upload limit is fine: predictions have their own limit.
    let big = json!({"instances": rows_json(&pixels(40, 784, 1), None)});
    assert!(big.to_string().len() > 64 * 1024);
    predict(&app, &id, big["instances"].clone()).await;
    let weights = formats::encode_weights(&model.tensors());
    assert!(weights.len() > 64 * 1024);
    let saved: Value = app
        .get(&format!("/v1/saved-models/{id}"))
        .await
        .json()
        .await
        .unwrap();
    let res = post_bytes(
        &app,
        &format!("/v1/models/{}/weights", saved["model_id"].as_str().unwrap()),
        weights,
    )
    .await;
    let problem = assert_problem(res, 413).await;
    assert!(problem["detail"].as_str().unwrap().contains("65536"), "{problem}");
}

#[tokio::test]
async fn predict_bodies_over_the_predict_limit_are_413_even_when_streamed_or_only_declared() {
    let app = spawn_app_with(|c| c.max_predict_bytes = 64 * 1024).await;
    // The weights (318 KB) are an upload, under the upload limit.
    let (id, _) = book_saved_model(&app).await;
    let x = pixels(40, 784, 1);
    let big = json!({"instances": rows_json(&x, None)});
    assert!(big.to_string().len() > 64 * 1024);
    let path = format!("/v1/saved-models/{id}/predict");
    let problem = assert_problem(app.post_json(&path, &big).await, 413).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("65536") && detail.contains("--max-predict-bytes"),
        "{problem}"
    );
    let infer = json!({"inputs": [{"name": "x", "shape": [40, 784], "datatype": "FP32",
        "data": x.iter().copied().collect::<Vec<f32>>()}]});
    assert_problem(
        app.post_json(&format!("/v2/models/{id}/infer"), &infer).await,
        413,
    )
    .await;
    let res = app
        .client
        .post(app.url(&path))
        .header("content-type", "application/x-npy")
        .body(npy::encode_f32(&[40, 784], x.as_slice().unwrap()))
        .send()
        .await
        .unwrap();
    assert_problem(res, 413).await;

    // Without a Content-Length the body is counted as it streams in.
    let chunks = (0..40).map(|_| Ok::<_, std::io::Error>(vec![b' '; 4096]));
    let res = app
        .client
        .post(app.url(&path))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_problem(res, 413).await;

    // A declared 191 MB body is refused from its header, before any of it is sent.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    sock.write_all(
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: 200000000\r\n\r\n{{\"instances\": ["
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = [0u8; 12];
    sock.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");
    assert_eq!(app.get("/healthz").await.status(), 200);
    // Under the limit all is well.
    predict(&app, &id, rows_json(&pixels(2, 784, 1), None)).await;
}

/// The book model uploaded in a test whose upload limit is too small for its weights: stored directly.
async fn book_saved_model_small(app: &TestApp) -> (String, Model) {
    let (model_id, model) = create_model(app, &book_model(), 7).await;
    let store = app.open_store().await;
    let id = fitd::store::new_id();
    let spec = fitd::store::models::get(&store, &model_id).await.unwrap().spec;
    let row = fitd::store::saved_models::SavedModelRow {
        id: id.clone(),
        model_id,
        job_id: None,
        epoch: None,
        source: fitd::store::saved_models::SavedModelSource::WeightsUpload,
        metrics: "{}".into(),
        spec,
        weights: fitd::store::saved_models::encode_weights(&model.tensors()),
        created_at: fitd::store::now_rfc3339(),
    };
    fitd::store::saved_models::insert(&store, &row).await.unwrap();
    (id, model)
}

/// An `.npy` file of `uint8` values, as `np.save` writes it.
pub fn npy_u8(shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    npy_with_header(
        &format!("{{'descr': '|u1', 'fortran_order': False, 'shape': {shape}, }}"),
        data,
    )
}

/// An `.npy` file with any header dictionary and data.
pub fn npy_with_header(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

async fn post_npy(app: &TestApp, id: &str, body: Vec<u8>, accept: Option<&str>) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url(&format!("/v1/saved-models/{id}/predict")))
        .header("content-type", "application/x-npy")
        .body(body);
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    req.send().await.unwrap()
}

/// The float32 values of an `.npy` answer, with its shape.
pub fn read_npy_f32(bytes: &[u8]) -> (Vec<usize>, Vec<f32>) {
    let a = npy::parse(bytes).unwrap();
    assert_eq!(a.dtype, fitd::serving::tensor::Dtype::F32);
    let mut v = vec![0.0; a.shape.iter().product()];
    a.dtype.decode_into(a.data, &mut v);
    (a.shape, v)
}

#[tokio::test]
async fn npy_instances_predict_like_json_and_npy_answers_carry_the_outputs() {
    let app = spawn_app().await;
    let (id, model) = book_saved_model(&app).await;
    let x = pixels(5, 784, 3);
    let json_answer = predict(&app, &id, rows_json(&x, None)).await;

    let res = post_npy(
        &app,
        &id,
        npy::encode_f32(&[5, 28, 28], x.as_slice().unwrap()),
        None,
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(res.json::<Value>().await.unwrap(), json_answer);

    // uint8 pixels, flat samples, answered as .npy: the engine's outputs to the bit.
    let pixels_u8: Vec<u8> = x.iter().map(|&v| v as u8).collect();
    let res = post_npy(
        &app,
        &id,
        npy_u8(&[5, 784], &pixels_u8),
        Some("application/x-npy"),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-npy");
    assert!(res.headers().contains_key("server-timing"));
    let (shape, values) = read_npy_f32(&res.bytes().await.unwrap());
    assert_eq!(shape, vec![5, 10]);
    let want: Vec<f32> = engine_rows(&model, &x).concat();
    assert_eq!(bits(&[values]), bits(std::slice::from_ref(&want)));

    // A JSON body can ask for an .npy answer too; the better-quality type wins.
    let res = app
        .client
        .post(app.url(&format!("/v1/saved-models/{id}/predict")))
        .header("accept", "application/json;q=0.5, application/x-npy")
        .json(&json!({"instances": rows_json(&x, None)}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "application/x-npy");
    assert_eq!(read_npy_f32(&res.bytes().await.unwrap()).1, want);
    let res = post_npy(
        &app,
        &id,
        npy_u8(&[5, 784], &pixels_u8),
        Some("application/x-npy;q=0.1, */*"),
    )
    .await;
    assert_eq!(res.headers()["content-type"], "application/json");
    let problem = assert_problem(
        post_npy(&app, &id, npy_u8(&[5, 784], &pixels_u8), Some("text/html")).await,
        406,
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("application/x-npy"),
        "{problem}"
    );

    // A regressor answers its values.
    let (reg_id, reg) = create_model(
        &app,
        &json!({"name": "reg", "input_shape": [3], "layers": [{"type": "dense", "units": 2}]}),
        2,
    )
    .await;
    let reg_saved = upload(&app, &reg_id, &reg).await;
    let xr = ndarray::array![[1.0f32, -2.0, 0.5], [3.0, 0.0, -1.0]];
    let res = post_npy(
        &app,
        reg_saved["id"].as_str().unwrap(),
        npy::encode_f32(&[2, 3], xr.as_slice().unwrap()),
        Some("application/x-npy"),
    )
    .await;
    let (shape, values) = read_npy_f32(&res.bytes().await.unwrap());
    assert_eq!(shape, vec![2, 2]);
    assert_eq!(values, engine_rows(&reg, &xr).concat());
}

#[tokio::test]
async fn bad_npy_bodies_are_422_problems_checked_before_allocating() {
    let app = spawn_app_with(|c| c.max_predict_rows = 3).await;
    let (id, _) = book_saved_model(&app).await;
    let header = |descr: &str, fortran: &str, shape: &str| {
        format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}")
    };
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        // What crashed the dataset reader: a huge declared shape with nothing behind it.
        (
            npy_with_header(&header("<f4", "False", "(1000000, 1000000)"), &[0; 16]),
            "instances",
            "4000000000000 bytes) but 16 bytes",
        ),
        (
            npy_with_header(&header(">f4", "False", "(1, 784)"), &[0; 3136]),
            "instances",
            "'<f4'",
        ),
        (
            npy_with_header(&header("<c8", "False", "(1, 784)"), &[0; 6272]),
            "instances",
            "not accepted",
        ),
        (
            npy_with_header(&header("<f4", "True", "(1, 784)"), &[0; 3136]),
            "instances",
            "Fortran",
        ),
        (npy_u8(&[1, 27, 28], &[0; 756]), "instances", "got [27, 28]"),
        (
            npy_u8(&[4, 784], &[0; 4 * 784]),
            "instances",
            "holds 4 instances; at most 3",
        ),
        (npy_u8(&[0, 784], &[]), "instances", "at least one"),
        (npy_u8(&[3], &[0; 3]), "instances", "got []"),
        (b"not an npy file".to_vec(), "instances", "not an .npy"),
    ];
    for (body, field, needle) in cases {
        let problem = assert_problem(post_npy(&app, &id, body, None).await, 422).await;
        assert_eq!(error_fields(&problem), [field], "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(needle),
            "{needle}: {problem}"
        );
    }
    let mut values = vec![0.0f32; 2 * 784];
    values[784 + 9] = f32::NAN;
    let problem = assert_problem(
        post_npy(&app, &id, npy::encode_f32(&[2, 784], &values), None).await,
        422,
    )
    .await;
    assert_eq!(error_fields(&problem), ["instances[1]"]);
    assert!(
        problem["detail"].as_str().unwrap().contains("feature 9"),
        "{problem}"
    );
    // No content type, or one that is none of JSON, .npy and multipart: 415.
    for ct in [None, Some("text/plain"), Some("application/jsonp")] {
        let mut req = app
            .client
            .post(app.url(&format!("/v1/saved-models/{id}/predict")))
            .body(json!({"instances": [vec![0.0; 784]]}).to_string());
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        assert_problem(req.send().await.unwrap(), 415).await;
    }
    assert_eq!(app.get("/healthz").await.status(), 200);
}

/// ONNX exports checked with the ONNX project's own tools (`tests/python/check_onnx.py`:
/// `onnx.checker` with the full check, onnxruntime predictions within 1e-5 of fitd's), over models
/// that together use every layer type (flatten, dense with and without bias, dropout, rescaling with
/// scale and offset, PCA) and every activation (relu, tanh, sigmoid, linear, softmax), for softmax and
/// sigmoid classifiers and a regressor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onnx_exports_predict_in_onnxruntime_as_fitd_does() {
    python_with(
        &["numpy", "onnx", "onnxruntime"],
        &["numpy", "onnx", "onnxruntime"],
    );
    let app = spawn_app().await;
    let mut cases: Vec<(String, Vec<usize>, Array2<f32>, &str)> = Vec::new();
    let (book, _) = book_saved_model(&app).await;
    cases.push((book, vec![28, 28], pixels(7, 784, 1), "probabilities"));
    let (pca, _) = pca_saved_model(&app).await;
    cases.push((pca, vec![6, 6], pixels(7, 36, 2), "probabilities"));
    let specs = [
        (
            json!({"name": "bin", "input_shape": [5], "layers": [
                {"type": "rescaling", "scale": 0.5, "offset": -1.0},
                {"type": "dense", "units": 8, "activation": "sigmoid"},
                {"type": "dense", "units": 6, "use_bias": false},
                {"type": "dense", "units": 1, "activation": "sigmoid"}]}),
            vec![5],
            "probabilities",
        ),
        (
            json!({"name": "reg", "input_shape": [3, 4], "layers": [
                {"type": "flatten"},
                {"type": "dense", "units": 16, "activation": "relu", "use_bias": false},
                {"type": "dropout", "rate": 0.5},
                {"type": "dense", "units": 8, "activation": "tanh"},
                {"type": "dense", "units": 2}]}),
            vec![3, 4],
            "values",
        ),
    ];
    for (i, (spec, shape, output)) in specs.into_iter().enumerate() {
        let (model_id, model) = create_model(&app, &spec, 30 + i as u64).await;
        let saved = upload(&app, &model_id, &model).await;
        let features = shape.iter().product();
        let x = pixels(7, features, 3 + i as u32).mapv(|v| v / 64.0 - 1.5);
        cases.push((saved["id"].as_str().unwrap().to_string(), shape, x, output));
    }

    let dir = tempfile::tempdir().unwrap();
    for (n, (id, shape, x, output)) in cases.iter().enumerate() {
        let res = app
            .get(&format!("/v1/saved-models/{id}/export?format=onnx"))
            .await;
        assert_eq!(res.status(), 200);
        assert!(
            res.headers()["content-disposition"]
                .to_str()
                .unwrap()
                .ends_with(".onnx\""),
            "{:?}",
            res.headers()
        );
        let model_file = dir.path().join(format!("m{n}.onnx"));
        std::fs::write(&model_file, res.bytes().await.unwrap()).unwrap();
        let batch_shape: Vec<usize> = std::iter::once(x.nrows()).chain(shape.iter().copied()).collect();
        let x_npy = npy::encode_f32(&batch_shape, x.as_slice().unwrap());
        let res = post_npy(&app, id, x_npy.clone(), Some("application/x-npy")).await;
        assert_eq!(res.status(), 200);
        let (xs, ys) = (
            dir.path().join(format!("x{n}.npy")),
            dir.path().join(format!("y{n}.npy")),
        );
        std::fs::write(&xs, &x_npy).unwrap();
        std::fs::write(&ys, res.bytes().await.unwrap()).unwrap();
        let output = std::ffi::OsString::from(output);
        run_python(
            "check_onnx.py",
            &[model_file.as_os_str(), xs.as_os_str(), ys.as_os_str(), &output],
        );
    }

    let (id, _, _, _) = &cases[0];
    let problem = assert_problem(
        app.get(&format!("/v1/saved-models/{id}/export?format=pytorch"))
            .await,
        422,
    )
    .await;
    assert_eq!(error_fields(&problem), ["format"]);
    assert_problem(app.get("/v1/saved-models/nope/export?format=onnx").await, 404).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_predicts_of_a_cold_model_decode_it_once_and_the_cache_reports_it() {
    let app = spawn_app().await;
    // 1.6 million weights: reading and decoding them takes long enough for every request to arrive.
    let spec = json!({"name": "wide", "input_shape": [784], "layers": [
        {"type": "dense", "units": 2000, "activation": "relu"},
        {"type": "dense", "units": 10, "activation": "softmax"}]});
    let (model_id, model) = create_model(&app, &spec, 9).await;
    let id = upload(&app, &model_id, &model).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A restart empties the cache: the model is cold.
    let app = app.restart().await;
    let stats: Value = app.get("/v1/model-cache").await.json().await.unwrap();
    assert_eq!(stats["models"], 0, "{stats}");
    assert_eq!(stats["capacity_bytes"], 512 << 20);
    assert_eq!(stats["hit_rate"], Value::Null);

    // Open the 16 connections first, so the predicts all go out at once.
    for res in futures_util::future::join_all((0..16).map(|_| app.get("/healthz"))).await {
        assert_eq!(res.status(), 200);
    }
    let x = pixels(1, 784, 5);
    let body = json!({"instances": rows_json(&x, None)});
    let path = format!("/v1/saved-models/{id}/predict");
    let answers = futures_util::future::join_all((0..16).map(|_| app.post_json(&path, &body))).await;
    for res in answers {
        assert_eq!(res.status(), 200);
        let got: Value = res.json().await.unwrap();
        assert_eq!(bits(&probabilities(&got)), bits(&engine_rows(&model, &x)));
    }
    let stats: Value = app.get("/v1/model-cache").await.json().await.unwrap();
    assert_eq!(stats["loads"], 1, "{stats}");
    assert_eq!(stats["misses"], 1, "{stats}");
    assert!(stats["waits"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(
        stats["hits"].as_u64().unwrap() + stats["waits"].as_u64().unwrap(),
        15,
        "{stats}"
    );
    assert_eq!(stats["models"], 1);
    assert_eq!(stats["bytes"], (784 * 2000 + 2000 + 2000 * 10 + 10) * 4);

    // Warm now: every lookup is a hit. Unknown ids count as failed loads.
    predict(&app, &id, rows_json(&x, None)).await;
    assert_problem(app.post_json("/v1/saved-models/nope/predict", &body).await, 404).await;
    let stats: Value = app.get("/v1/model-cache").await.json().await.unwrap();
    assert_eq!(stats["load_failures"], 1, "{stats}");
    let lookups = ["hits", "misses", "waits"]
        .iter()
        .map(|k| stats[k].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(lookups, 18);
    let rate = stats["hit_rate"].as_f64().unwrap();
    assert_eq!(rate, stats["hits"].as_f64().unwrap() / 18.0);
}

#[tokio::test]
async fn the_cache_evicts_the_least_recently_used_model_past_its_budget() {
    // Room for one book model (318,040 bytes of weights), not two.
    let app = spawn_app_with(|c| c.model_cache_bytes = 500_000).await;
    let (a, _) = book_saved_model(&app).await;
    let (b, _) = book_saved_model(&app).await;
    let stats: Value = app.get("/v1/model-cache").await.json().await.unwrap();
    assert_eq!(
        (stats["models"].clone(), stats["evictions"].clone()),
        (json!(1), json!(1)),
        "{stats}"
    );
    let x = rows_json(&pixels(1, 784, 2), None);
    predict(&app, &a, x.clone()).await;
    predict(&app, &b, x).await;
    let stats: Value = app.get("/v1/model-cache").await.json().await.unwrap();
    assert_eq!(stats["loads"], 2, "{stats}");
    assert_eq!(stats["evictions"], 3, "{stats}");
    assert_eq!(stats["capacity_bytes"], 500_000);
}
