//! Training parameters over HTTP: every number checked before a job is queued (each bad one a 422
//! naming its field), learning-rate schedules and the learning-rate callbacks as a job sees them.

use serde_json::{Value, json};

use super::jobs::{
    diabetes_regression, digits_dataset, digits_model, diverging_body, job_body, read_events, submit,
    wait_finished,
};
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

async fn history(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/v1/jobs/{id}/history"))
        .await
        .json()
        .await
        .unwrap()
}

/// History's learning rates as the f32 values training used (JSON's decimal round trip may move
/// an f64 by its last bit, never an f32).
fn rates(h: &Value) -> Vec<f32> {
    h["history"]["learning_rate"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_moves_the_learning_rate_every_step_and_history_and_sse_record_it() {
    let app = spawn_app().await;
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 16).await;
    // 1437 training samples in batches of 32: 45 steps per epoch, so a staircase of 45 steps
    // halves the rate at each epoch's end.
    let mut body = job_body(&model, &ds, 4);
    body["compile"]["optimizer"] = json!({"type": "sgd", "momentum": 0.9, "learning_rate":
        {"type": "exponential_decay", "initial_learning_rate": 0.1, "decay_steps": 45,
         "decay_rate": 0.5, "staircase": true}});
    let job = submit(&app, &body).await;
    let id = job["id"].as_str().unwrap();
    assert_eq!(
        job["request"]["compile"]["optimizer"]["learning_rate"]["type"],
        "exponential_decay"
    );
    let j = wait_finished(&app, id).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    let h = history(&app, id).await;
    assert_eq!(rates(&h), [0.05, 0.025, 0.0125, 0.00625], "{h}");
    assert!(
        h["history"]["val_accuracy"][3].as_f64().unwrap() > 0.6,
        "it trains: {h}"
    );
    let epochs: Vec<Value> = read_events(&app, id, None, 1000)
        .await
        .into_iter()
        .filter(|e| e.event == "epoch")
        .map(|e| e.data["learning_rate"].clone())
        .collect();
    assert_eq!(epochs, h["history"]["learning_rate"].as_array().unwrap().clone());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reduce_lr_on_plateau_lowers_a_constant_rate_between_epochs() {
    let app = spawn_app().await;
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 16).await;
    let mut body = job_body(&model, &ds, 5);
    body["compile"]["optimizer"] = json!({"type": "adam", "learning_rate": 0.004});
    // No epoch improves val_loss by 1e9: after patience 1 the rate halves each epoch, down to min_lr.
    body["callbacks"] = json!([{"type": "reduce_lr_on_plateau", "monitor": "val_loss", "factor": 0.5,
                                "patience": 1, "min_delta": 1e9, "min_lr": 0.0015}]);
    let job = submit(&app, &body).await;
    let id = job["id"].as_str().unwrap();
    let j = wait_finished(&app, id).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_eq!(
        rates(&history(&app, id).await),
        [0.004, 0.004, 0.002, 0.0015, 0.0015]
    );
    // A schedule cannot be combined with a callback that sets the rate, as in Keras.
    body["compile"]["optimizer"]["learning_rate"] = json!({"type": "inverse_time_decay",
        "initial_learning_rate": 0.01, "decay_steps": 10, "decay_rate": 0.5});
    let p = assert_problem(app.post_json("/v1/jobs", &body).await, 422).await;
    assert_eq!(error_fields(&p), ["callbacks[0].type"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_on_nan_ends_a_diverging_job_as_succeeded_with_the_last_finite_weights() {
    let app = spawn_app().await;
    let (ds, model) = diabetes_regression(&app).await;
    let mut body = diverging_body(&model, &ds, 20);
    body["callbacks"] = json!([{"type": "terminate_on_nan"}]);
    let job = submit(&app, &body).await;
    let id = job["id"].as_str().unwrap();
    let j = wait_finished(&app, id).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_eq!(j["stop_reason"], "terminate_on_nan");
    assert!(j["epoch"].as_i64().unwrap() < 19, "it stopped early: {j}");
    let h = history(&app, id).await;
    let losses = h["history"]["loss"].as_array().unwrap();
    assert!(
        losses.last().unwrap().is_null(),
        "the last epoch's loss was not finite: {h}"
    );
    assert!(losses[..losses.len() - 1].iter().all(Value::is_number));
    let ev = read_events(&app, id, None, 1000).await;
    assert_eq!(ev.last().unwrap().data["stop_reason"], "terminate_on_nan");
    // The saved model predicts finite numbers: the bad batch's update was never applied.
    let saved = j["saved_model_id"].as_str().unwrap();
    let res = app
        .post_json(
            &format!("/v1/saved-models/{saved}/predict"),
            &json!({"instances": [[0.01, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, 0.0, 0.02, -0.02]]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let pred: Value = res.json().await.unwrap();
    assert!(pred.to_string().chars().any(|c| c.is_ascii_digit()), "{pred}");
    assert!(!pred.to_string().contains("null"), "finite predictions: {pred}");

    // raise_error: the job fails with the divergence, as without the callback.
    body["callbacks"] = json!([{"type": "terminate_on_nan", "raise_error": true}]);
    let job = submit(&app, &body).await;
    let j = wait_finished(&app, job["id"].as_str().unwrap()).await;
    assert_eq!(j["status"], "failed", "{j}");
    assert!(j["error"].to_string().contains("loss became"), "{j}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_before_terminate_on_nan_keeps_its_jobs_and_records_the_new_stop_reason() {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
    // A database migrated as the previous release left it, with a finished job and its epoch.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    let old_migrations = dir.path().join("migrations");
    std::fs::create_dir(&old_migrations).unwrap();
    for f in ["0001_datasets_models.sql", "0002_jobs.sql"] {
        std::fs::copy(
            format!("{}/migrations/sqlite/{f}", env!("CARGO_MANIFEST_DIR")),
            old_migrations.join(f),
        )
        .unwrap();
    }
    let opts = SqliteConnectOptions::new()
        .filename(&db)
        .create_if_missing(true)
        .foreign_keys(true);
    let pool = SqlitePool::connect_with(opts.clone()).await.unwrap();
    sqlx::migrate::Migrator::new(old_migrations.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    let request = json!({"model_id": "m", "dataset_id": "d",
        "compile": {"optimizer": "adam", "loss": "mse"}, "fit": {"seed": 1}});
    sqlx::query(
        "INSERT INTO jobs (seq, id, model_id, dataset_id, status, request, seed, epochs, epoch, stop_reason, \
         created_at, updated_at) VALUES (41, 'old-job', 'm', 'd', 'succeeded', ?, 1, 1, 0, 'completed', \
         '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
    )
    .bind(request.to_string())
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO job_epochs (job_id, epoch, metrics, duration_ms, created_at) \
         VALUES ('old-job', 0, '{\"loss\": 0.5}', 1.0, '2026-01-01T00:00:00Z')",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let app = super::support::spawn_app_with(|c| {
        c.db = fitd::store::Db::Sqlite(db.clone());
        c.data_dir = None;
    })
    .await;
    let j: Value = app.get("/v1/jobs/old-job").await.json().await.unwrap();
    assert_eq!(j["stop_reason"], "completed", "{j}");
    let h = history(&app, "old-job").await;
    assert_eq!(
        h["history"]["loss"],
        json!([0.5]),
        "the job's epochs survived the rebuild: {h}"
    );

    let (ds, model) = diabetes_regression(&app).await;
    let mut body = diverging_body(&model, &ds, 20);
    body["callbacks"] = json!([{"type": "terminate_on_nan"}]);
    let job = submit(&app, &body).await;
    let j = wait_finished(&app, job["id"].as_str().unwrap()).await;
    assert_eq!(j["stop_reason"], "terminate_on_nan", "{j}");
    drop(app);

    let pool = SqlitePool::connect_with(opts).await.unwrap();
    let broken: Vec<(String,)> = sqlx::query_as("SELECT \"table\" FROM pragma_foreign_key_check")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(broken.is_empty(), "{broken:?}");
    let (seq,): (i64,) = sqlx::query_as("SELECT seq FROM jobs WHERE id = ?")
        .bind(job["id"].as_str().unwrap())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(seq > 41, "new jobs queue after the old ones: {seq}");
}
