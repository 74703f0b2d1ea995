//! The Open Inference Protocol (KServe v2) routes: health, model metadata and readiness, infer with
//! flat or nested FP32 data, and each bad request as a problem carrying the protocol's `error`.

use serde_json::{Value, json};

use super::saved_models::{book_saved_model, npy_u8, pixels, read_npy_f32};
use super::support::{
    TestApp, assert_problem, error_fields, python_with, run_python, spawn_app, spawn_app_with,
};

#[tokio::test]
async fn health_and_server_metadata_answer() {
    let app = spawn_app().await;
    let live: Value = app.get("/v2/health/live").await.json().await.unwrap();
    assert_eq!(live, json!({"live": true}));
    let ready: Value = app.get("/v2/health/ready").await.json().await.unwrap();
    assert_eq!(ready, json!({"ready": true}));
    let meta: Value = app.get("/v2").await.json().await.unwrap();
    assert_eq!(meta["name"], "fitd");
    assert_eq!(meta["extensions"], json!(["binary_tensor_data"]));
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
            json!({"inputs": [input(json!([1, 784]), "FP16", 784)]}),
            "inputs[0].datatype",
            "FP32, FP64, UINT8",
        ),
        (
            json!({"inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP32"}]}),
            "inputs[0].data",
            "is required",
        ),
        (
            json!({"inputs": [input(json!([1, 784]), "FP32", 784)], "outputs": [{"name": "output", "parameters": {"classification": 3}}]}),
            "outputs[0].parameters.classification",
            "not offered",
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

/// A binary-data request: the JSON header, then `raw`, with the header's length in
/// `Inference-Header-Content-Length`.
async fn post_binary(app: &TestApp, path: &str, header: &Value, raw: &[u8]) -> reqwest::Response {
    let json = header.to_string();
    let mut body = json.clone().into_bytes();
    body.extend_from_slice(raw);
    app.client
        .post(app.url(path))
        .header("inference-header-content-length", json.len().to_string())
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Splits a binary-output response into its JSON header and the float32 values after it.
async fn binary_answer(res: reqwest::Response) -> (Value, Vec<f32>) {
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/octet-stream");
    let len: usize = res.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = res.bytes().await.unwrap();
    let header: Value = serde_json::from_slice(&body[..len]).unwrap();
    let values = body[len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (header, values)
}

#[tokio::test]
async fn binary_tensors_in_and_out_give_the_json_paths_bits() {
    let app = spawn_app().await;
    let (id, model) = book_saved_model(&app).await;
    let path = format!("/v2/models/{id}/infer");
    let x = pixels(4, 784, 8);
    let want: Vec<f32> = model.predict(x.view()).unwrap().iter().copied().collect();
    let f32_bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let u8_bytes: Vec<u8> = x.iter().map(|&v| v as u8).collect();

    for (datatype, raw) in [("FP32", &f32_bytes), ("UINT8", &u8_bytes)] {
        let header = json!({"id": "b1", "inputs": [{"name": "input", "shape": [4, 28, 28], "datatype": datatype,
            "parameters": {"binary_data_size": raw.len()}}], "parameters": {"binary_data_output": true}});
        let (head, values) = binary_answer(post_binary(&app, &path, &header, raw).await).await;
        assert_eq!(head["id"], "b1");
        assert_eq!(head["model_version"], "1");
        assert_eq!(
            head["outputs"],
            json!([{"name": "output", "shape": [4, 10], "datatype": "FP32", "parameters": {"binary_data_size": 160}}])
        );
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&values), bits(&want), "{datatype}");

        // The output's own binary_data wins over the request default: JSON out.
        let mut h = header.clone();
        h["outputs"] = json!([{"name": "output", "parameters": {"binary_data": false}}]);
        let res = post_binary(&app, &path, &h, raw).await;
        assert_eq!(res.status(), 200);
        assert!(res.headers().get("inference-header-content-length").is_none());
        let out: Value = res.json().await.unwrap();
        let got: Vec<f32> = out["outputs"][0]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(bits(&got), bits(&want));
    }

    // JSON input, binary output asked for by the output alone; the versioned route too.
    let body = json!({"inputs": [{"name": "x", "shape": [4, 784], "datatype": "UINT8",
        "data": u8_bytes.iter().map(|&b| b as u32).collect::<Vec<_>>()}],
        "outputs": [{"name": "output", "parameters": {"binary_data": true}}]});
    let res = app
        .post_json(&format!("/v2/models/{id}/versions/1/infer"), &body)
        .await;
    let (_, values) = binary_answer(res).await;
    assert_eq!(values, want);

    // The .npy answer of /v1 predict holds the same outputs.
    let res = app
        .client
        .post(app.url(&format!("/v1/saved-models/{id}/predict")))
        .header("content-type", "application/x-npy")
        .header("accept", "application/x-npy")
        .body(npy_u8(&[4, 28, 28], &u8_bytes))
        .send()
        .await
        .unwrap();
    assert_eq!(read_npy_f32(&res.bytes().await.unwrap()).1, want);
}

#[tokio::test]
async fn bad_binary_requests_are_problems_naming_the_size_that_disagrees() {
    let app = spawn_app().await;
    let (id, _) = book_saved_model(&app).await;
    let path = format!("/v2/models/{id}/infer");
    let header = |datatype: &str, shape: Value, size: usize| json!({"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": size}}]});
    let cases = [
        (
            header("FP32", json!([1, 784]), 3136),
            vec![0u8; 3000],
            "inputs[0].parameters.binary_data_size",
            "only 3000 bytes",
        ),
        (
            header("FP32", json!([1, 784]), 3000),
            vec![0u8; 3000],
            "inputs[0].parameters.binary_data_size",
            "needs 3136",
        ),
        (
            header("UINT8", json!([1, 784]), 784),
            vec![0u8; 790],
            "parameters.binary_data_size",
            "790 bytes follow",
        ),
        (
            header("FP32", json!([2000000000, 2000000000, 2000000000]), 8),
            vec![0u8; 8],
            "inputs[0].parameters.binary_data_size",
            "more than fit",
        ),
        (
            header("UINT8", json!([1, 27, 28]), 756),
            vec![0u8; 756],
            "inputs[0].shape",
            "got [27, 28]",
        ),
        (
            header("UINT8", json!([0, 784]), 0),
            vec![],
            "inputs[0].data",
            "at least one",
        ),
        (
            json!({"inputs": [{"name": "x", "shape": [1, 784], "datatype": "UINT8", "data": vec![0; 784]}]}),
            vec![0u8; 784],
            "parameters.binary_data_size",
            "784 bytes follow",
        ),
        (
            json!({"inputs": [{"name": "x", "shape": [1, 784], "datatype": "UINT8", "data": vec![0; 784], "parameters": {"binary_data_size": 784}}]}),
            vec![0u8; 784],
            "inputs[0].data",
            "not both",
        ),
    ];
    for (head, raw, field, needle) in cases {
        let problem = assert_problem(post_binary(&app, &path, &head, &raw).await, 422).await;
        assert_eq!(error_fields(&problem), [field], "{problem}");
        assert!(
            problem["error"].as_str().unwrap().contains(needle),
            "{needle}: {problem}"
        );
    }
    // NaN in binary FP32 data names the instance.
    let mut values = vec![0.0f32; 2 * 784];
    values[784 + 4] = f32::INFINITY;
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let problem = assert_problem(
        post_binary(&app, &path, &header("FP32", json!([2, 784]), raw.len()), &raw).await,
        422,
    )
    .await;
    assert_eq!(error_fields(&problem), ["inputs[0].data[1]"]);
    // JSON values that do not fit the declared integer type.
    let mut data = vec![json!(0); 784];
    data[7] = json!(256);
    let body = json!({"inputs": [{"name": "x", "shape": [1, 784], "datatype": "UINT8", "data": data}]});
    let problem = assert_problem(app.post_json(&path, &body).await, 422).await;
    assert_eq!(error_fields(&problem), ["inputs[0].data[7]"]);

    // Framing errors: the header length is no number, or longer than the body.
    // A header that does not parse is a 422 naming it, like a bad query value; a length past the
    // body's end is a malformed body (400).
    for (len, status) in [("abc", 422), ("999999", 400)] {
        let res = app
            .client
            .post(app.url(&path))
            .header("inference-header-content-length", len)
            .body("{}")
            .send()
            .await
            .unwrap();
        let problem = assert_problem(res, status).await;
        assert!(
            problem["error"]
                .as_str()
                .unwrap()
                .contains("Inference-Header-Content-Length"),
            "{problem}"
        );
    }
    // Content types: text is refused; octet-stream only with the header length.
    let ok =
        json!({"inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP32", "data": vec![0.0; 784]}]});
    for ct in ["text/plain", "application/octet-stream", "application/jsonp"] {
        let res = app
            .client
            .post(app.url(&path))
            .header("content-type", ct)
            .body(ok.to_string())
            .send()
            .await
            .unwrap();
        assert_problem(res, 415).await;
    }
    // Triton's clients send no content type at all.
    let res = app
        .client
        .post(app.url(&path))
        .body(ok.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// Triton's own Python client (`tritonclient.http`, pip-installed when missing) against fitd: FP32
/// and UINT8 inputs as binary tensor data and as JSON, outputs binary and JSON, on the plain and the
/// versioned route; every answer must equal, bit for bit, the `.npy` answer of `/v1` predict.
// The server must keep answering while this thread waits for the Python client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_infers_with_binary_and_json_tensors() {
    python_with(&["numpy", "tritonclient.http"], &["numpy", "tritonclient[http]"]);
    let app = spawn_app().await;
    let (id, _) = book_saved_model(&app).await;
    let dir = tempfile::tempdir().unwrap();
    for (n, seed) in [(1, 3), (5, 4), (300, 5)] {
        let x = pixels(n, 784, seed);
        let x_u8: Vec<u8> = x.iter().map(|&v| v as u8).collect();
        let x_npy = npy_u8(&[n, 28, 28], &x_u8);
        let res = app
            .client
            .post(app.url(&format!("/v1/saved-models/{id}/predict")))
            .header("content-type", "application/x-npy")
            .header("accept", "application/x-npy")
            .body(x_npy.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let inputs = dir.path().join(format!("x{n}.npy"));
        let outputs = dir.path().join(format!("y{n}.npy"));
        std::fs::write(&inputs, &x_npy).unwrap();
        std::fs::write(&outputs, res.bytes().await.unwrap()).unwrap();
        let url = app.base.trim_start_matches("http://").to_string();
        run_python(
            "check_triton.py",
            &[url.as_ref(), id.as_ref(), inputs.as_os_str(), outputs.as_os_str()],
        );
    }
}
