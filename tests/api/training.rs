//! Training parameters over HTTP: every number checked before a job is queued (each bad one a 422
//! naming its field), learning-rate schedules and the learning-rate callbacks as a job sees them.

use serde_json::{Value, json};

use super::jobs::{digits_dataset, digits_model, job_body};
use super::support::{TestApp, assert_problem, error_fields, spawn_app};

/// Posts a body given as text, for JSON that `serde_json::Value` cannot hold (`1e400`, `NaN`).
async fn post_raw(app: &TestApp, path: &str, body: String) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request sent")
}

async fn jobs_queued(app: &TestApp) -> usize {
    let jobs: Value = app.get("/v1/jobs").await.json().await.unwrap();
    jobs["items"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_out_of_range_number_is_a_422_naming_its_field_and_nothing_is_queued() {
    let app = spawn_app().await;
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 16).await;

    // The number from the hardening report: finite as a 64-bit float, infinite as the 32-bit float
    // training computes with.
    let mut body = job_body(&model, &ds, 1);
    body["compile"]["optimizer"]["learning_rate"] = json!(1e308);
    let p = assert_problem(app.post_json("/v1/jobs", &body).await, 422).await;
    assert_eq!(error_fields(&p), ["compile.optimizer.learning_rate"]);
    assert!(
        p["errors"][0]["message"].as_str().unwrap().contains("(0, 1e6]"),
        "{p}"
    );

    let body = json!({"model_id": model, "dataset_id": ds,
        "validation": {"split": 0},
        "compile": {"optimizer": {"type": "rmsprop", "learning_rate": 1e-45, "rho": 1.0,
                                  "momentum": 1.5, "epsilon": 0.0},
                    "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
        "fit": {"epochs": 100001, "batch_size": 2_000_000},
        "callbacks": [
            {"type": "early_stopping", "monitor": "val_loss", "patience": 100001, "min_delta": 1e300},
            {"type": "reduce_lr_on_plateau", "monitor": "val_accuracy", "factor": 1.0,
             "cooldown": 100001, "min_lr": -0.5, "min_delta": -1e308},
            {"type": "learning_rate_scheduler",
             "schedule": [{"epoch": 2, "learning_rate": 0.1}, {"epoch": 2, "learning_rate": 0.0}]}]});
    let p = assert_problem(app.post_json("/v1/jobs", &body).await, 422).await;
    assert_eq!(
        error_fields(&p),
        [
            "validation.split",
            "compile.optimizer.learning_rate",
            "compile.optimizer.momentum",
            "compile.optimizer.rho",
            "compile.optimizer.epsilon",
            "fit.epochs",
            "fit.batch_size",
            "callbacks[0].patience",
            "callbacks[0].min_delta",
            "callbacks[1].min_delta",
            "callbacks[1].factor",
            "callbacks[1].cooldown",
            "callbacks[1].min_lr",
            "callbacks[2].schedule[1].epoch",
            "callbacks[2].schedule[1].learning_rate",
        ]
    );
    assert_eq!(p["detail"], "15 fields are invalid");

    // Schedule parameters, each by its path inside the schedule object.
    let mut body = job_body(&model, &ds, 1);
    body["compile"]["optimizer"] = json!({"type": "sgd", "learning_rate": {
        "type": "polynomial_decay", "initial_learning_rate": 0.0, "decay_steps": 0,
        "end_learning_rate": 1e7, "power": -1}});
    let p = assert_problem(app.post_json("/v1/jobs", &body).await, 422).await;
    assert_eq!(
        error_fields(&p),
        [
            "compile.optimizer.learning_rate.initial_learning_rate",
            "compile.optimizer.learning_rate.decay_steps",
            "compile.optimizer.learning_rate.end_learning_rate",
            "compile.optimizer.learning_rate.power",
        ]
    );
    assert_eq!(jobs_queued(&app).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_json_can_write_but_no_float_holds_are_a_422_naming_the_field() {
    let app = spawn_app().await;
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 16).await;
    let body = |optimizer: &str, fit: &str| {
        format!(
            r#"{{"model_id": "{model}", "dataset_id": "{ds}",
                "compile": {{"optimizer": {optimizer}, "loss": "sparse_categorical_crossentropy"}},
                "fit": {fit}}}"#
        )
    };
    for (optimizer, fit, field) in [
        (
            r#"{"type": "adam", "learning_rate": 1e400}"#,
            "{}",
            "compile.optimizer.learning_rate",
        ),
        (
            r#"{"type": "adam", "beta_2": -1e999}"#,
            "{}",
            "compile.optimizer.beta_2",
        ),
        (
            r#"{"type": "sgd", "learning_rate": {"type": "exponential_decay", "initial_learning_rate": 1e999,
                "decay_steps": 10, "decay_rate": 0.5}}"#,
            "{}",
            "compile.optimizer.learning_rate.initial_learning_rate",
        ),
        (r#""adam""#, r#"{"epochs": -3}"#, "fit.epochs"),
        (r#""adam""#, r#"{"batch_size": 1e30}"#, "fit.batch_size"),
        (
            r#"{"type": "sgd", "momentum": "high"}"#,
            "{}",
            "compile.optimizer.momentum",
        ),
    ] {
        let p = assert_problem(post_raw(&app, "/v1/jobs", body(optimizer, fit)).await, 422).await;
        assert_eq!(error_fields(&p), [field], "{p}");
    }
    // NaN and Infinity are not JSON at all: a 400.
    assert_problem(
        post_raw(
            &app,
            "/v1/jobs",
            body(r#"{"type": "adam", "learning_rate": NaN}"#, "{}"),
        )
        .await,
        400,
    )
    .await;
    assert_eq!(jobs_queued(&app).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_numbers_beyond_32_bit_floats_are_refused_by_field() {
    let app = spawn_app().await;
    let p = assert_problem(
        app.post_json(
            "/v1/models",
            &json!({"name": "m", "input_shape": [4], "layers": [
                {"type": "rescaling", "scale": 1e39},
                {"type": "dense", "units": 8, "activation": "relu"},
                {"type": "dropout", "rate": 1e308},
                {"type": "dense", "units": 2, "activation": "softmax"}]}),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(error_fields(&p), ["layers[0].scale", "layers[2].rate"]);
}
