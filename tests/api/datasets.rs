//! `/v1/datasets`: every upload format, built-ins, downloads from a local mirror, sample images,
//! and every kind of bad data named in a 422 with nothing left behind.

use std::io::Read;
use std::path::PathBuf;

use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use super::support::{TestApp, assert_problem, error_fields, spawn_app, spawn_app_with};

fn mnist_file(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/mnist-10k")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

fn part(bytes: Vec<u8>, filename: &str) -> Part {
    Part::bytes(bytes).file_name(filename.to_string())
}

async fn upload(app: &TestApp, form: Form) -> reqwest::Response {
    app.client
        .post(app.url("/v1/datasets"))
        .multipart(form)
        .send()
        .await
        .unwrap()
}

fn idx_form(images: Vec<u8>, labels: Vec<u8>) -> Form {
    Form::new()
        .text("name", "mnist-test")
        .part("images", part(images, "t10k-images-idx3-ubyte.gz"))
        .part("labels", part(labels, "t10k-labels-idx1-ubyte.gz"))
}

/// Files under the server's data directory (datasets and scratch), to check nothing is left behind.
pub(super) fn stored_files(app: &TestApp) -> Vec<PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                walk(&e.path(), out);
            } else {
                out.push(e.path());
            }
        }
    }
    let mut out = Vec::new();
    walk(&app.dir.path().join("fitd-data"), &mut out);
    out
}

#[tokio::test]
async fn uploading_gzipped_mnist_idx_describes_the_dataset() {
    let app = spawn_app().await;
    let form = idx_form(
        mnist_file("t10k-images-idx3-ubyte.gz"),
        mnist_file("t10k-labels-idx1-ubyte.gz"),
    );
    let res = upload(&app, form).await;
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let d: Value = res.json().await.unwrap();
    assert_eq!(d["n_samples"], 2000);
    assert_eq!(d["input_shape"], json!([28, 28]));
    assert_eq!(d["n_classes"], 10);
    assert_eq!(d["kind"], "classification");
    assert_eq!(d["feature_range"], json!({"min": 0.0, "max": 255.0}));
    let counts: u64 = d["class_counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(counts, 2000);
    // Pixels stay bytes on disk: within 5 % of the raw pixels plus labels.
    let raw = 2000 * 784 + 2000;
    let size = d["size_bytes"].as_u64().unwrap();
    assert!(
        size >= raw && size * 100 <= raw * 105,
        "{size} bytes on disk for {raw} raw"
    );
    let again: Value = app.get(&location).await.json().await.unwrap();
    assert_eq!(again, d);
}

#[tokio::test]
async fn raw_idx_files_load_like_gzipped_ones_and_survive_a_restart() {
    let app = spawn_app().await;
    let images = gunzip(&mnist_file("t10k-images-idx3-ubyte.gz"));
    let labels = gunzip(&mnist_file("t10k-labels-idx1-ubyte.gz"));
    let d: Value = upload(&app, idx_form(images, labels)).await.json().await.unwrap();
    assert_eq!(d["n_samples"], 2000);
    let app = app.restart().await;
    let again: Value = app
        .get(&format!("/v1/datasets/{}", d["id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again, d);
    let png = app
        .get(&format!(
            "/v1/datasets/{}/samples/0.png",
            d["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(png.status(), 200);
}

#[tokio::test]
async fn truncated_gzip_is_a_422_and_leaves_nothing_behind() {
    let app = spawn_app().await;
    let mut images = mnist_file("t10k-images-idx3-ubyte.gz");
    images.truncate(images.len() / 2);
    let problem = assert_problem(
        upload(&app, idx_form(images, mnist_file("t10k-labels-idx1-ubyte.gz"))).await,
        422,
    )
    .await;
    assert_eq!(error_fields(&problem), ["images"]);
    assert!(problem["detail"].as_str().unwrap().contains("gzip"), "{problem}");
    assert_eq!(stored_files(&app), Vec::<PathBuf>::new());
    let list: Value = app.get("/v1/datasets").await.json().await.unwrap();
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn an_idx_header_that_disagrees_with_the_file_size_is_a_422() {
    let app = spawn_app().await;
    let mut images = gunzip(&mnist_file("t10k-images-idx3-ubyte.gz"));
    images[7] = 0xff; // claims far more samples than the file holds
    let problem = assert_problem(
        upload(&app, idx_form(images, mnist_file("t10k-labels-idx1-ubyte.gz"))).await,
        422,
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("IDX header declares"),
        "{problem}"
    );

    let labels = gunzip(&mnist_file("t10k-labels-idx1-ubyte.gz"));
    let short = labels[..labels.len() - 10].to_vec();
    let problem = assert_problem(
        upload(&app, idx_form(mnist_file("t10k-images-idx3-ubyte.gz"), short)).await,
        422,
    )
    .await;
    assert_eq!(error_fields(&problem), ["labels"]);
}

fn csv_form(csv: &str) -> Form {
    Form::new()
        .text("name", "table")
        .part("file", part(csv.as_bytes().to_vec(), "data.csv"))
}

#[tokio::test]
async fn a_kaggle_style_csv_loads_with_input_shape_and_renders_samples() {
    let app = spawn_app().await;
    let mut csv = String::from("label,pixel1,pixel2,pixel3,pixel4\n");
    csv.push_str("3,0,255,128,0\n7,255,0,0,255\n");
    let form = csv_form(&csv).text("input_shape", "2,2");
    let res = upload(&app, form).await;
    assert_eq!(res.status(), 201);
    let d: Value = res.json().await.unwrap();
    assert_eq!(d["input_shape"], json!([2, 2]));
    assert_eq!(d["n_classes"], 8);
    assert_eq!(d["class_counts"], json!({"3": 1, "7": 1}));

    let res = app
        .get(&format!(
            "/v1/datasets/{}/samples/1.png",
            d["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/png");
    assert_eq!(res.headers()["x-label"], "7");
    let bytes = res.bytes().await.unwrap();
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes.to_vec()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (2, 2));
    assert_eq!(&buf[..4], &[255, 0, 0, 255]);
}

#[tokio::test]
async fn csv_label_column_is_selectable_and_fractional_targets_make_a_regression_dataset() {
    let app = spawn_app().await;
    let csv = "a,b,price\n1,2,3.5\n4,5,6.25\n7,8,9\n";
    let d: Value = upload(&app, csv_form(csv).text("label_column", "price"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(d["kind"], "regression");
    assert_eq!(d["n_targets"], 1);
    assert_eq!(d["n_classes"], Value::Null);
    assert_eq!(d["input_shape"], json!([2]));

    let problem = assert_problem(
        upload(&app, csv_form(csv).text("label_column", "cost")).await,
        422,
    )
    .await;
    assert_eq!(error_fields(&problem), ["label_column"]);
    let problem = assert_problem(upload(&app, csv_form(csv)).await, 422).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("no column \"label\""),
        "{problem}"
    );
}

#[tokio::test]
async fn each_kind_of_bad_csv_is_a_422_naming_the_problem() {
    let app = spawn_app().await;
    let cases = [
        (
            "label,a,b\n1,2,3\n0,4\n",
            "line 3 has 2 fields but the header has 3",
        ),
        (
            "label,a,b\n1,2,3\n0,x,4\n",
            "line 3, column \"a\": \"x\" is not a number",
        ),
        ("label,a,b\n1,2,NaN\n", "\"NaN\" is not a finite number"),
        ("label,a,b\n1,2,inf\n", "\"inf\" is not a finite number"),
        ("label,a,b\n", "no data rows"),
    ];
    for (csv, expected) in cases {
        let problem = assert_problem(upload(&app, csv_form(csv)).await, 422).await;
        assert!(
            problem["detail"].as_str().unwrap().contains(expected),
            "{csv:?}: {problem}"
        );
        assert_eq!(error_fields(&problem), ["file"]);
    }
    let problem = assert_problem(
        upload(
            &app,
            csv_form("label,a\n0.5,1\n1,2\n").text("task", "classification"),
        )
        .await,
        422,
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("must be integers"),
        "{problem}"
    );
    assert_eq!(stored_files(&app), Vec::<PathBuf>::new());
}

fn npy_bytes<A: ndarray_npy::WritableElement, D: ndarray::Dimension>(a: &ndarray::Array<A, D>) -> Vec<u8> {
    use ndarray_npy::WriteNpyExt;
    let mut out = Vec::new();
    a.write_npy(&mut out).unwrap();
    out
}

#[tokio::test]
async fn npz_and_npy_uploads_load_x_and_y() {
    let app = spawn_app().await;
    let x = ndarray::Array3::<f64>::from_shape_fn((6, 3, 2), |(i, j, k)| (i * 6 + j * 2 + k) as f64);
    let y = ndarray::Array1::<i64>::from(vec![0, 1, 2, 0, 1, 2]);
    let mut npz = ndarray_npy::NpzWriter::new(std::io::Cursor::new(Vec::new()));
    npz.add_array("x", &x).unwrap();
    npz.add_array("y", &y).unwrap();
    let bytes = npz.finish().unwrap().into_inner();
    let form = Form::new().text("name", "npz").part("file", part(bytes, "d.npz"));
    let res = upload(&app, form).await;
    assert_eq!(res.status(), 201);
    let d: Value = res.json().await.unwrap();
    assert_eq!(d["input_shape"], json!([3, 2]));
    assert_eq!(d["n_classes"], 3);
    assert_eq!(d["feature_range"], json!({"min": 0.0, "max": 35.0}));

    let xs = ndarray::Array2::<f32>::from_shape_fn((4, 2), |(i, j)| (i + j) as f32);
    let ys = ndarray::Array1::<f32>::from(vec![0.5, 1.5, 2.5, 3.5]);
    let form = Form::new()
        .text("name", "npy")
        .part("x", part(npy_bytes(&xs), "x.npy"))
        .part("y", part(npy_bytes(&ys), "y.npy"));
    let d: Value = upload(&app, form).await.json().await.unwrap();
    assert_eq!(d["kind"], "regression");
    assert_eq!(d["n_samples"], 4);

    let xs = ndarray::Array2::<f32>::from_elem((2, 2), f32::NAN);
    let ys = ndarray::Array1::<u8>::from(vec![0, 1]);
    let form = Form::new()
        .part("x", part(npy_bytes(&xs), "x.npy"))
        .part("y", part(npy_bytes(&ys), "y.npy"));
    let problem = assert_problem(upload(&app, form).await, 422).await;
    assert_eq!(error_fields(&problem), ["x"]);
    assert!(problem["detail"].as_str().unwrap().contains("NaN"), "{problem}");

    let ys = ndarray::Array1::<u8>::from(vec![0, 1, 1]);
    let form = Form::new()
        .part(
            "x",
            part(npy_bytes(&ndarray::Array2::<f32>::zeros((2, 2))), "x.npy"),
        )
        .part("y", part(npy_bytes(&ys), "y.npy"));
    let problem = assert_problem(upload(&app, form).await, 422).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("3 labels but there are 2 samples"),
        "{problem}"
    );
}

#[tokio::test]
async fn uploads_with_missing_or_unknown_parts_are_422() {
    let app = spawn_app().await;
    let form = Form::new().part("images", part(mnist_file("t10k-images-idx3-ubyte.gz"), "i.gz"));
    assert_problem(upload(&app, form).await, 422).await;
    let form = Form::new().part("photo", part(vec![1, 2, 3], "p.bin"));
    let problem = assert_problem(upload(&app, form).await, 422).await;
    assert_eq!(error_fields(&problem), ["photo"]);
    let form = Form::new().part("file", part(mnist_file("t10k-labels-idx1-ubyte.gz"), "l.gz"));
    assert_problem(upload(&app, form).await, 422).await;
}

#[tokio::test]
async fn an_upload_over_the_size_limit_is_a_413_problem() {
    let app = spawn_app_with(|c| c.max_upload_bytes = 64 * 1024).await;
    let form = idx_form(
        mnist_file("t10k-images-idx3-ubyte.gz"),
        mnist_file("t10k-labels-idx1-ubyte.gz"),
    );
    assert_problem(upload(&app, form).await, 413).await;
    assert_eq!(stored_files(&app), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn a_body_that_is_neither_multipart_nor_json_is_a_415() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(app.url("/v1/datasets"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_problem(res, 415).await;
}

#[tokio::test]
async fn built_in_datasets_ship_with_the_binary() {
    let app = spawn_app().await;
    let res = app.post_json("/v1/datasets", &json!({"source": "digits"})).await;
    assert_eq!(res.status(), 201);
    let d: Value = res.json().await.unwrap();
    assert_eq!(
        (d["name"].clone(), d["n_samples"].clone()),
        (json!("digits"), json!(1797))
    );
    assert_eq!(d["input_shape"], json!([8, 8]));
    assert_eq!(d["n_classes"], 10);
    let res = app
        .get(&format!(
            "/v1/datasets/{}/samples/0.png",
            d["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-label"], "0");

    let d: Value = app
        .post_json("/v1/datasets", &json!({"name": "db", "source": "diabetes"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (d["kind"].clone(), d["n_samples"].clone()),
        (json!("regression"), json!(442))
    );
    for (source, n, classes) in [("iris", 150, 3), ("wine", 178, 3), ("breast_cancer", 569, 2)] {
        let d: Value = app
            .post_json("/v1/datasets", &json!({"source": source}))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            (d["n_samples"].as_u64(), d["n_classes"].as_u64()),
            (Some(n), Some(classes)),
            "{source}"
        );
    }
    let problem = assert_problem(
        app.post_json("/v1/datasets", &json!({"source": "cifar"})).await,
        422,
    )
    .await;
    assert_eq!(error_fields(&problem), ["source"]);
    let problem = assert_problem(
        app.post_json("/v1/datasets", &json!({"source": "iris", "colour": 1}))
            .await,
        422,
    )
    .await;
    assert_eq!(error_fields(&problem), ["colour"]);
}

#[tokio::test]
async fn one_dimensional_samples_have_no_image_and_out_of_range_indexes_are_404() {
    let app = spawn_app().await;
    let d: Value = app
        .post_json("/v1/datasets", &json!({"source": "iris"}))
        .await
        .json()
        .await
        .unwrap();
    let id = d["id"].as_str().unwrap();
    assert_problem(app.get(&format!("/v1/datasets/{id}/samples/0.png")).await, 422).await;
    assert_problem(app.get(&format!("/v1/datasets/{id}/samples/150.png")).await, 404).await;
    assert_problem(app.get(&format!("/v1/datasets/{id}/samples/abc")).await, 404).await;
    assert_problem(app.get("/v1/datasets/nope/samples/0.png").await, 404).await;
}

#[tokio::test]
async fn datasets_list_pages_and_delete_removes_row_and_files() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for source in ["iris", "wine", "digits"] {
        let d: Value = app
            .post_json("/v1/datasets", &json!({"source": source}))
            .await
            .json()
            .await
            .unwrap();
        ids.push(d["id"].as_str().unwrap().to_string());
    }
    let page: Value = app.get("/v1/datasets?limit=2").await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().unwrap();
    assert_eq!(next, ids[1]);
    let page: Value = app
        .get(&format!("/v1/datasets?limit=2&after={next}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"][0]["id"], json!(ids[2]));
    assert_eq!(page["next"], Value::Null);

    assert_eq!(
        app.delete(&format!("/v1/datasets/{}", ids[0])).await.status(),
        204
    );
    assert_problem(app.get(&format!("/v1/datasets/{}", ids[0])).await, 404).await;
    assert_problem(app.delete(&format!("/v1/datasets/{}", ids[0])).await, 404).await;
    assert!(!app.dir.path().join("fitd-data/datasets").join(&ids[0]).exists());
    assert!(
        app.dir
            .path()
            .join("fitd-data/datasets")
            .join(&ids[1])
            .join("x.npy")
            .exists()
    );
}

/// Serves `tests/data/mnist-10k` like a dataset mirror; returns its base URL.
async fn spawn_mirror() -> String {
    use axum::extract::Path;
    let app = axum::Router::new().route(
        "/mnist/{file}",
        axum::routing::get(|Path(file): Path<String>| async move {
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/mnist-10k")
                .join(file);
            match std::fs::read(path) {
                Ok(bytes) => (axum::http::StatusCode::OK, bytes),
                Err(_) => (axum::http::StatusCode::NOT_FOUND, Vec::new()),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/mnist/")
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test]
async fn mnist_downloads_from_the_configured_mirror_and_is_verified() {
    let mirror = spawn_mirror().await;
    let digests: Vec<(String, String)> = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
        .iter()
        .map(|f| (format!("mnist/{f}"), sha256_hex(&mnist_file(f))))
        .collect();
    let app = spawn_app_with(|c| {
        c.mnist_url = mirror.clone();
        c.download_sha256 = digests;
    })
    .await;
    let res = app
        .post_json("/v1/datasets", &json!({"source": "mnist", "split": "train"}))
        .await;
    assert_eq!(res.status(), 201);
    let d: Value = res.json().await.unwrap();
    assert_eq!(d["n_samples"], 8000);
    assert_eq!(d["source"], "download:mnist/train");
    assert_eq!(d["name"], "mnist-train");
}

#[tokio::test]
async fn a_download_whose_checksum_differs_is_a_502_naming_the_url() {
    let mirror = spawn_mirror().await;
    // No digest override: the local files are not the official ones, so verification must fail.
    let app = spawn_app_with(|c| c.mnist_url = mirror.clone()).await;
    let problem = assert_problem(
        app.post_json("/v1/datasets", &json!({"source": "mnist", "split": "test"}))
            .await,
        502,
    )
    .await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("{mirror}t10k-images-idx3-ubyte.gz")),
        "{detail}"
    );
    assert!(detail.contains("SHA-256"), "{detail}");
    assert_eq!(stored_files(&app), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn an_unreachable_mirror_is_a_503_naming_the_url() {
    // Bind then drop a listener so the port is closed.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{port}/fashion/");
    let app = spawn_app_with(|c| c.fashion_mnist_url = base.clone()).await;
    let problem = assert_problem(
        app.post_json("/v1/datasets", &json!({"source": "fashion_mnist"}))
            .await,
        503,
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().contains(&base), "{problem}");
    let problem = assert_problem(
        app.post_json(
            "/v1/datasets",
            &json!({"source": "fashion_mnist", "split": "validation"}),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(error_fields(&problem), ["split"]);
}

#[tokio::test]
async fn pca_derives_a_dataset_whose_samples_render_the_reconstruction() {
    let app = spawn_app().await;
    let d: Value = app
        .post_json("/v1/datasets", &json!({"source": "digits"}))
        .await
        .json()
        .await
        .unwrap();
    let id = d["id"].as_str().unwrap();
    let res = app
        .post_json(&format!("/v1/datasets/{id}/pca"), &json!({"n_components": 20}))
        .await;
    assert_eq!(res.status(), 201);
    let out: Value = res.json().await.unwrap();
    let ratios: Vec<f64> = serde_json::from_value(out["explained_variance_ratio"].clone()).unwrap();
    assert_eq!(ratios.len(), 20);
    assert!(ratios.windows(2).all(|w| w[0] >= w[1]), "{ratios:?}");
    let total: f64 = ratios.iter().sum();
    assert!(
        total > 0.8 && total < 1.0,
        "20 components of digits explain {total}"
    );
    let derived = &out["dataset"];
    assert_eq!(derived["input_shape"], json!([20]));
    assert_eq!(derived["parent_id"], json!(id));
    assert_eq!(derived["n_samples"], 1797);
    assert_eq!(derived["class_counts"], d["class_counts"]);

    let res = app
        .get(&format!(
            "/v1/datasets/{}/samples/0.png",
            derived["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-label"], "0");
    let decoder = png::Decoder::new(std::io::Cursor::new(res.bytes().await.unwrap().to_vec()));
    let info = decoder.read_info().unwrap();
    assert_eq!((info.info().width, info.info().height), (8, 8));

    let problem = assert_problem(
        app.post_json(&format!("/v1/datasets/{id}/pca"), &json!({"n_components": 65}))
            .await,
        422,
    )
    .await;
    assert_eq!(error_fields(&problem), ["n_components"]);
    assert_problem(
        app.post_json("/v1/datasets/nope/pca", &json!({"n_components": 2}))
            .await,
        404,
    )
    .await;
}

/// A job body training a small MLP on `dataset` for 2 epochs with a fixed seed (the model is
/// created here).
async fn small_mlp_job(app: &TestApp, dataset: &str) -> Value {
    let model: Value = app
        .post_json(
            "/v1/models",
            &json!({"name": "small", "input_shape": [28, 28], "layers": [
                {"type": "flatten"},
                {"type": "rescaling", "scale": 0.00392156862745098},
                {"type": "dense", "units": 16, "activation": "relu"},
                {"type": "dropout", "rate": 0.2},
                {"type": "dense", "units": 10, "activation": "softmax"}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    json!({"model_id": model["id"], "dataset_id": dataset,
        "validation": {"split": 0.2},
        "compile": {"optimizer": "adam", "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
        "fit": {"epochs": 2, "batch_size": 32, "seed": 11}})
}

/// Waits for job `id` to succeed; returns its history and the saved weights file.
async fn job_results(app: &TestApp, id: &str) -> (Value, Vec<u8>) {
    let job = super::jobs::wait_finished(app, id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let history: Value = app
        .get(&format!("/v1/jobs/{id}/history"))
        .await
        .json()
        .await
        .unwrap();
    let weights = app
        .get(&format!(
            "/v1/saved-models/{}/weights",
            job["saved_model_id"].as_str().unwrap()
        ))
        .await
        .bytes()
        .await
        .unwrap()
        .to_vec();
    (history["history"].clone(), weights)
}

/// Trains a small MLP on `dataset` for 2 epochs with a fixed seed; returns the history and the saved
/// weights file.
async fn train_small_mlp(app: &TestApp, dataset: &str) -> (Value, Vec<u8>) {
    let body = small_mlp_job(app, dataset).await;
    let job = super::jobs::submit(app, &body).await;
    job_results(app, job["id"].as_str().unwrap()).await
}

async fn dataset_cache(app: &TestApp) -> Value {
    let res = app.get("/v1/dataset-cache").await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn upload_t10k(app: &TestApp) -> String {
    let images = gunzip(&mnist_file("t10k-images-idx3-ubyte.gz"));
    let labels = gunzip(&mnist_file("t10k-labels-idx1-ubyte.gz"));
    let d: Value = upload(app, idx_form(images, labels)).await.json().await.unwrap();
    d["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_second_job_on_a_dataset_is_a_cache_hit_and_trains_bit_for_bit_like_the_first_and_like_no_cache() {
    let app = spawn_app().await;
    let id = upload_t10k(&app).await;
    let stats = dataset_cache(&app).await;
    assert_eq!(
        (stats["hits"].as_u64(), stats["misses"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(stats["capacity_bytes"], 1u64 << 30);

    let cold = train_small_mlp(&app, &id).await;
    let stats = dataset_cache(&app).await;
    assert_eq!(stats["misses"], 1, "{stats}");
    assert_eq!(stats["loads"], 1, "{stats}");
    assert_eq!(stats["hits"], 0, "{stats}");
    assert_eq!(stats["datasets"], 1, "{stats}");
    // 2,000 samples of 784 float32 features and 2,000 labels.
    assert_eq!(stats["bytes"], 2000 * 784 * 4 + 2000 * 4, "{stats}");

    let warm = train_small_mlp(&app, &id).await;
    let stats = dataset_cache(&app).await;
    assert_eq!(
        (stats["hits"].as_u64(), stats["misses"].as_u64()),
        (Some(1), Some(1)),
        "{stats}"
    );
    assert_eq!(stats["hit_rate"], 0.5);
    assert_eq!(cold.0, warm.0, "identical history");
    assert!(cold.1 == warm.1, "identical saved weights");

    // The same job on a server without the cache.
    let uncached = spawn_app_with(|c| c.dataset_cache_bytes = 0).await;
    let other = upload_t10k(&uncached).await;
    let plain = train_small_mlp(&uncached, &other).await;
    let stats = dataset_cache(&uncached).await;
    assert_eq!(
        (stats["datasets"].as_u64(), stats["bytes"].as_u64()),
        (Some(0), Some(0)),
        "{stats}"
    );
    assert_eq!(cold.0, plain.0, "identical history with the cache off");
    assert!(cold.1 == plain.1, "identical saved weights with the cache off");

    // Deleting the dataset (and, by cascade, its finished jobs) drops it from the cache.
    let res = app.delete(&format!("/v1/datasets/{id}?cascade=true")).await;
    assert_eq!(res.status(), 204);
    let stats = dataset_cache(&app).await;
    assert_eq!(
        (
            stats["datasets"].as_u64(),
            stats["bytes"].as_u64(),
            stats["invalidations"].as_u64()
        ),
        (Some(0), Some(0), Some(1)),
        "{stats}"
    );
}

#[tokio::test]
async fn concurrent_jobs_on_a_cold_dataset_read_it_once() {
    let app = spawn_app_with(|c| c.workers = 2).await;
    let id = upload_t10k(&app).await;
    let (a, b) = (small_mlp_job(&app, &id).await, small_mlp_job(&app, &id).await);
    let (ja, jb) = tokio::join!(super::jobs::submit(&app, &a), super::jobs::submit(&app, &b));
    let ra = job_results(&app, ja["id"].as_str().unwrap()).await;
    let rb = job_results(&app, jb["id"].as_str().unwrap()).await;
    assert_eq!(ra.0, rb.0, "same seed, same data: same history");
    let stats = dataset_cache(&app).await;
    assert_eq!(
        (stats["misses"].as_u64(), stats["loads"].as_u64()),
        (Some(1), Some(1)),
        "{stats}"
    );
    assert_eq!(
        stats["hits"].as_u64().unwrap() + stats["waits"].as_u64().unwrap(),
        1,
        "the other job shared the load or the cached arrays: {stats}"
    );
}

#[tokio::test]
async fn the_dataset_cache_budget_evicts_the_least_recently_used_dataset() {
    // Room for one 2,000-image dataset (6.3 MB as float32) but not two.
    let app = spawn_app_with(|c| c.dataset_cache_bytes = 8_000_000).await;
    let first = upload_t10k(&app).await;
    let second = upload_t10k(&app).await;
    train_small_mlp(&app, &first).await;
    train_small_mlp(&app, &second).await;
    let stats = dataset_cache(&app).await;
    assert_eq!(
        (
            stats["datasets"].as_u64(),
            stats["evictions"].as_u64(),
            stats["misses"].as_u64()
        ),
        (Some(1), Some(1), Some(2)),
        "{stats}"
    );
    assert_eq!(stats["bytes"], 2000 * 784 * 4 + 2000 * 4);
    assert_eq!(stats["capacity_bytes"], 8_000_000);
}

#[tokio::test]
async fn image_bytes_float32_uploads_and_float32_files_of_earlier_versions_train_bit_for_bit_alike() {
    let app = spawn_app().await;
    let images = gunzip(&mnist_file("t10k-images-idx3-ubyte.gz"));
    let labels = gunzip(&mnist_file("t10k-labels-idx1-ubyte.gz"));
    let bytes: Value = upload(&app, idx_form(images.clone(), labels.clone()))
        .await
        .json()
        .await
        .unwrap();
    let bytes_id = bytes["id"].as_str().unwrap().to_string();

    // The same images sent as float32 NPY.
    let x = ndarray::Array3::from_shape_fn((2000, 28, 28), |(i, r, c)| {
        f32::from(images[16 + i * 784 + r * 28 + c])
    });
    let y = ndarray::Array1::from_shape_fn(2000, |i| labels[8 + i]);
    let form = Form::new()
        .text("name", "float32")
        .part("x", part(npy_bytes(&x), "x.npy"))
        .part("y", part(npy_bytes(&y), "y.npy"));
    let floats: Value = upload(&app, form).await.json().await.unwrap();
    assert_eq!(
        floats["size_bytes"].as_u64().unwrap(),
        2000 * 784 * 4 + 8000 + 256
    );

    let (h_bytes, w_bytes) = train_small_mlp(&app, &bytes_id).await;
    let (h_floats, w_floats) = train_small_mlp(&app, floats["id"].as_str().unwrap()).await;
    assert_eq!(h_bytes, h_floats);
    assert!(w_bytes == w_floats, "the saved weights differ");
    let png = app.get(&format!("/v1/datasets/{bytes_id}/samples/3.png")).await;
    let png = png.bytes().await.unwrap();

    // Earlier versions stored every dataset's features as float32: rewrite the byte dataset's
    // x.npy that way and check it still renders and trains the same.
    let mut app = app;
    app.stop().await;
    let path = app
        .dir
        .path()
        .join("fitd-data/datasets")
        .join(&bytes_id)
        .join("x.npy");
    let x2 = x.into_shape_with_order((2000, 784)).unwrap();
    let mut out = Vec::new();
    ndarray_npy::WriteNpyExt::write_npy(&x2, &mut out).unwrap();
    std::fs::write(&path, out).unwrap();
    let app = app.restart().await;
    let again = app.get(&format!("/v1/datasets/{bytes_id}/samples/3.png")).await;
    assert_eq!(again.bytes().await.unwrap(), png);
    let (h_legacy, w_legacy) = train_small_mlp(&app, &bytes_id).await;
    assert_eq!(h_legacy, h_bytes);
    assert!(w_legacy == w_bytes, "the saved weights differ");
}
