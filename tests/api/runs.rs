//! Runs people can find again: names, tags and notes (set at creation, edited with `PATCH`), list
//! filters, sorting by a final or best metric with stable cursor pages.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::jobs::{digits_dataset, digits_model, job_body, submit, wait_finished};
use super::support::{TestApp, assert_problem, error_fields, spawn_app, spawn_app_with};

async fn patch(app: &TestApp, path: &str, body: &Value) -> reqwest::Response {
    app.client
        .patch(app.url(path))
        .json(body)
        .send()
        .await
        .expect("request sent")
}

fn labelled(model: &str, ds: &str, epochs: u32, name: &str, tags: Value) -> Value {
    let mut body = job_body(model, ds, epochs);
    body["name"] = json!(name);
    body["tags"] = tags;
    body
}

/// Every page of a list, following `next`; the ids in order.
async fn all_pages(app: &TestApp, query: &str, limit: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/v1/jobs?{query}&limit={limit}");
        if let Some(a) = &after {
            path.push_str(&format!("&after={a}"));
        }
        let res = app.get(&path).await;
        assert_eq!(res.status(), 200, "{path}: {}", res.text().await.unwrap());
        let page: Value = res.json().await.unwrap();
        let got = page["items"].as_array().unwrap();
        assert!(got.len() <= limit);
        items.extend(got.iter().cloned());
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => return items,
        }
    }
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_has_a_name_tags_and_notes_that_patch_edits_and_checks() {
    let app = spawn_app().await;
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 8).await;
    let mut body = labelled(
        &model,
        &ds,
        1,
        "baseline",
        json!({"team": "vision", "stage": "dev"}),
    );
    body["notes"] = json!("first try\nwith adam");
    let job = submit(&app, &body).await;
    let id = job["id"].as_str().unwrap();
    assert_eq!(job["name"], "baseline");
    assert_eq!(job["tags"], json!({"stage": "dev", "team": "vision"}));
    assert_eq!(job["notes"], "first try\nwith adam");
    // The labels are not part of the training request.
    assert!(job["request"].get("name").is_none(), "{job}");

    let res = patch(
        &app,
        &format!("/v1/jobs/{id}"),
        &json!({"name": "baseline-v2", "tags": {"stage": "prod", "team": null, "owner": "ana"}}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let got: Value = res.json().await.unwrap();
    assert_eq!(got["name"], "baseline-v2");
    assert_eq!(got["tags"], json!({"owner": "ana", "stage": "prod"}));
    assert_eq!(got["notes"], "first try\nwith adam", "left out, so kept");
    let res = patch(&app, &format!("/v1/jobs/{id}"), &json!({"notes": null})).await;
    let got: Value = res.json().await.unwrap();
    assert_eq!(got["notes"], Value::Null);
    assert_eq!(got["name"], "baseline-v2");
    // What GET shows after the job finished: the edits stay.
    let done = wait_finished(&app, id).await;
    assert_eq!(done["tags"], json!({"owner": "ana", "stage": "prod"}));

    // Bad labels, at creation and in a patch, each named.
    let mut bad = labelled(
        &model,
        &ds,
        1,
        &"n".repeat(201),
        json!({"has space": "x", "ok": "v"}),
    );
    bad["notes"] = json!("x".repeat(10_001));
    let problem = assert_problem(app.post_json("/v1/jobs", &bad).await, 422).await;
    assert_eq!(error_fields(&problem), ["name", "tags.has space", "notes"]);
    let many: serde_json::Map<String, Value> = (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
    let problem = assert_problem(
        app.post_json(
            "/v1/jobs",
            &labelled(&model, &ds, 1, "x", Value::Object(many.clone())),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(error_fields(&problem), ["tags"]);
    let problem = assert_problem(
        patch(&app, &format!("/v1/jobs/{id}"), &json!({"tags": many})).await,
        422,
    )
    .await;
    assert_eq!(error_fields(&problem), ["tags"]);
    let problem = assert_problem(
        patch(
            &app,
            &format!("/v1/jobs/{id}"),
            &json!({"name": "", "tags": {"a": 1}}),
        )
        .await,
        422,
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().contains("tags"), "{problem}");
    let problem = assert_problem(
        patch(&app, &format!("/v1/jobs/{id}"), &json!({"name": ""})).await,
        422,
    )
    .await;
    assert_eq!(error_fields(&problem), ["name"]);
    let problem = assert_problem(
        patch(&app, &format!("/v1/jobs/{id}"), &json!({"colour": "red"})).await,
        422,
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("colour"),
        "{problem}"
    );
    // Nothing of the refused patches was applied.
    let now: Value = app.get(&format!("/v1/jobs/{id}")).await.json().await.unwrap();
    assert_eq!(now["name"], "baseline-v2");
    assert_eq!(now["tags"], json!({"owner": "ana", "stage": "prod"}));
    assert_problem(patch(&app, "/v1/jobs/nope", &json!({"name": "x"})).await, 404).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_filter_by_status_model_dataset_name_tags_and_creation_time() {
    let app = spawn_app_with(|c| c.workers = 1).await;
    let ds_a = digits_dataset(&app).await;
    let ds_b = digits_dataset(&app).await;
    let m1 = digits_model(&app, 8).await;
    let m2 = digits_model(&app, 8).await;
    let a = submit(
        &app,
        &labelled(
            &m1,
            &ds_a,
            1,
            "Sweep lr=0.1",
            json!({"team": "vision", "sweep": "lr"}),
        ),
    )
    .await;
    let b = submit(
        &app,
        &labelled(
            &m1,
            &ds_b,
            1,
            "sweep lr=0.01",
            json!({"team": "nlp", "sweep": "lr"}),
        ),
    )
    .await;
    for j in [&a, &b] {
        wait_finished(&app, j["id"].as_str().unwrap()).await;
    }
    let between = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let c = submit(
        &app,
        &labelled(&m2, &ds_a, 1, "baseline", json!({"team": "vision"})),
    )
    .await;
    wait_finished(&app, c["id"].as_str().unwrap()).await;
    let (a, b, c) = (
        a["id"].as_str().unwrap().to_string(),
        b["id"].as_str().unwrap().to_string(),
        c["id"].as_str().unwrap().to_string(),
    );
    let list = |q: String| {
        let app = &app;
        async move { ids(&all_pages(app, &q, 50).await) }
    };
    assert_eq!(list(format!("model_id={m1}")).await, [a.clone(), b.clone()]);
    assert_eq!(list(format!("dataset_id={ds_a}")).await, [a.clone(), c.clone()]);
    assert_eq!(
        list(format!("model_id={m1}&dataset_id={ds_a}")).await,
        vec![a.clone()]
    );
    assert_eq!(list("name=SWEEP".into()).await, [a.clone(), b.clone()]);
    assert_eq!(list("name=lr%3D0.01".into()).await, vec![b.clone()]);
    assert_eq!(list("tag=team:vision".into()).await, [a.clone(), c.clone()]);
    assert_eq!(list("tag=sweep".into()).await, [a.clone(), b.clone()]);
    assert_eq!(list("tag=sweep&tag=team:vision".into()).await, vec![a.clone()]);
    assert_eq!(list("tag=team:audio".into()).await, Vec::<String>::new());
    let t = urlencode(&between);
    assert_eq!(list(format!("created_after={t}")).await, vec![c.clone()]);
    assert_eq!(list(format!("created_before={t}")).await, [a.clone(), b.clone()]);
    assert_eq!(
        list("status=succeeded&order=desc".into()).await,
        [c.clone(), b.clone(), a.clone()]
    );
    assert_eq!(list("status=queued".into()).await, Vec::<String>::new());
    // Pages of one in reverse order cover every job once.
    assert_eq!(
        ids(&all_pages(&app, "order=desc", 1).await),
        [c.clone(), b.clone(), a.clone()]
    );

    for (query, field) in [
        ("created_after=yesterday", "created_after"),
        ("tag=bad%20key", "tag"),
        ("order_by=best.f1", "order_by"),
        ("order=up", "order"),
        ("order_by=final.loss&after=nonsense", "after"),
    ] {
        let problem = assert_problem(app.get(&format!("/v1/jobs?{query}")).await, 422).await;
        assert_eq!(error_fields(&problem), [field], "{query}: {problem}");
    }
}

fn urlencode(s: &str) -> String {
    s.replace(':', "%3A").replace('+', "%2B")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_sort_by_a_best_or_final_metric_and_pages_stay_stable() {
    let app = spawn_app_with(|c| c.workers = 2).await;
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 8).await;
    let mut finished = Vec::new();
    // Different epochs and rates give different accuracies; two identical runs tie exactly.
    for (epochs, lr) in [
        (1, 0.001),
        (3, 0.01),
        (2, 0.003),
        (1, 0.03),
        (1, 0.03),
        (2, 0.0003),
    ] {
        let mut body = job_body(&model, &ds, epochs);
        body["compile"]["optimizer"]["learning_rate"] = json!(lr);
        finished.push(submit(&app, &body).await["id"].as_str().unwrap().to_string());
    }
    for id in &finished {
        wait_finished(&app, id).await;
    }
    // A job without validation has no val_accuracy: it comes last in either direction.
    let mut body = job_body(&model, &ds, 1);
    body.as_object_mut().unwrap().remove("validation");
    let unvalidated = submit(&app, &body).await["id"].as_str().unwrap().to_string();
    wait_finished(&app, &unvalidated).await;
    // The best and final val_accuracy of each job, from its history.
    let mut best = std::collections::HashMap::new();
    let mut last = std::collections::HashMap::new();
    for id in &finished {
        let h: Value = app
            .get(&format!("/v1/jobs/{id}/history"))
            .await
            .json()
            .await
            .unwrap();
        let acc: Vec<f64> = h["history"]["val_accuracy"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        best.insert(id.clone(), acc.iter().cloned().fold(f64::MIN, f64::max));
        last.insert(id.clone(), *acc.last().unwrap());
        let h_loss = h["history"]["val_loss"].as_array().unwrap();
        assert!(!h_loss.is_empty());
    }
    let filter = format!("model_id={model}");
    for (order_by, values, desc) in [
        ("best.val_accuracy", &best, true),
        ("best.val_accuracy", &best, false),
        ("final.val_accuracy", &last, true),
    ] {
        for limit in [1, 2, 4] {
            let q = format!(
                "{filter}&order_by={order_by}&order={}",
                if desc { "desc" } else { "asc" }
            );
            let got = ids(&all_pages(&app, &q, limit).await);
            let unique: HashSet<_> = got.iter().collect();
            assert_eq!(unique.len(), got.len(), "a job twice: {got:?}");
            assert_eq!(got.len(), finished.len() + 1, "{q} limit {limit}");
            let with_metric: Vec<f64> = got[..finished.len()].iter().map(|id| values[id]).collect();
            let mut sorted = with_metric.clone();
            sorted.sort_by(|a, b| if desc { b.total_cmp(a) } else { a.total_cmp(b) });
            assert_eq!(with_metric, sorted, "{q} limit {limit}: {got:?}");
            assert_eq!(got[finished.len()], unvalidated);
        }
    }
    // best.val_loss is the lowest loss: ascending puts the best job first.
    let got = ids(&all_pages(&app, &format!("{filter}&order_by=best.loss&order=asc"), 3).await);
    assert_eq!(got.len(), finished.len() + 1);
    // A cursor belongs to its order.
    let page: Value = app
        .get(&format!("/v1/jobs?{filter}&order_by=best.val_accuracy&limit=1"))
        .await
        .json()
        .await
        .unwrap();
    let cursor = page["next"].as_str().unwrap();
    let problem = assert_problem(
        app.get(&format!(
            "/v1/jobs?{filter}&order_by=final.val_accuracy&after={cursor}"
        ))
        .await,
        422,
    )
    .await;
    assert_eq!(error_fields(&problem), ["after"]);
}

#[tokio::test]
async fn an_unknown_job_cannot_be_listed_after() {
    let app = spawn_app().await;
    let problem = assert_problem(app.get("/v1/jobs?after=nope").await, 422).await;
    assert_eq!(error_fields(&problem), ["after"]);
}

/// The space the database uses and the rows a job has in each of its tables. Space is the file's
/// `PRAGMA page_count` on SQLite; PostgreSQL returns space to the table only at a later vacuum, so
/// there it is the bytes of stored checkpoints and weights.
async fn db_facts(app: &TestApp, job: &str) -> (i64, i64) {
    let store = app.open_store().await;
    let space_sql = match app.db() {
        fitd::store::Db::Sqlite(_) => "SELECT page_count FROM pragma_page_count()",
        fitd::store::Db::Postgres(_) => {
            "SELECT CAST((SELECT COALESCE(SUM(octet_length(state)), 0) FROM checkpoints) + \
             (SELECT COALESCE(SUM(octet_length(weights)), 0) FROM saved_models) AS BIGINT)"
        }
    };
    let space: i64 = sqlx::query_scalar(space_sql)
        .fetch_one(&store.pool)
        .await
        .unwrap();
    let rows: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM job_epochs WHERE job_id = $1) + \
         (SELECT COUNT(*) FROM job_events WHERE job_id = $1) + \
         (SELECT COUNT(*) FROM checkpoints WHERE job_id = $1) + (SELECT COUNT(*) FROM jobs WHERE id = $1)",
    )
    .bind(job)
    .fetch_one(&store.pool)
    .await
    .unwrap();
    store.pool.close().await;
    (space, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_finished_jobs_removes_their_rows_keeps_saved_models_unless_asked_and_shrinks_the_file() {
    let app = spawn_app_with(|c| c.workers = 1).await;
    let ds = digits_dataset(&app).await;
    // Wide enough that each job's checkpoints (weights and Adam moments) fill many pages.
    let model = digits_model(&app, 512).await;
    let a = submit(&app, &job_body(&model, &ds, 2)).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = submit(&app, &job_body(&model, &ds, 2)).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let a_saved = wait_finished(&app, &a).await["saved_model_id"]
        .as_str()
        .unwrap()
        .to_string();
    let b_saved = wait_finished(&app, &b).await["saved_model_id"]
        .as_str()
        .unwrap()
        .to_string();
    let running = submit(&app, &job_body(&model, &ds, 500)).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    super::jobs::wait_until(&app, &running, 60, |j| j["status"] == "running").await;

    let problem = assert_problem(app.delete(&format!("/v1/jobs/{running}")).await, 409).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("running"),
        "{problem}"
    );
    assert_problem(app.delete("/v1/jobs/nope").await, 404).await;
    app.post_json(&format!("/v1/jobs/{running}/cancel"), &json!({}))
        .await;
    wait_finished(&app, &running).await;

    let (pages_before, rows_a) = db_facts(&app, &a).await;
    assert!(rows_a > 5, "job a has rows: {rows_a}");
    assert_eq!(app.delete(&format!("/v1/jobs/{a}")).await.status(), 204);
    let (pages_after_a, rows_a) = db_facts(&app, &a).await;
    assert_eq!(rows_a, 0);
    assert!(
        pages_after_a < pages_before,
        "{pages_after_a} pages, before {pages_before}"
    );
    assert_problem(app.get(&format!("/v1/jobs/{a}")).await, 404).await;
    assert_problem(app.get(&format!("/v1/jobs/{a}/history")).await, 404).await;
    assert_problem(app.delete(&format!("/v1/jobs/{a}")).await, 404).await;
    // Its saved model stays and still predicts.
    assert_eq!(
        app.get(&format!("/v1/saved-models/{a_saved}")).await.status(),
        200
    );
    let res = app
        .post_json(
            &format!("/v1/saved-models/{a_saved}/predict"),
            &json!({"instances": [vec![0.0; 64]]}),
        )
        .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());

    // With saved_models=true the saved model goes too, and with it more pages.
    assert_eq!(
        app.delete(&format!("/v1/jobs/{b}?saved_models=true"))
            .await
            .status(),
        204
    );
    let (pages_after_b, rows_b) = db_facts(&app, &b).await;
    assert_eq!(rows_b, 0);
    assert!(
        pages_after_b < pages_after_a,
        "{pages_after_b} pages, before {pages_after_a}"
    );
    assert_problem(app.get(&format!("/v1/saved-models/{b_saved}")).await, 404).await;
    assert_problem(
        app.post_json(
            &format!("/v1/saved-models/{b_saved}/predict"),
            &json!({"instances": [vec![0.0; 64]]}),
        )
        .await,
        404,
    )
    .await;
    // The cancelled job is gone from lists once deleted.
    assert_eq!(app.delete(&format!("/v1/jobs/{running}")).await.status(), 204);
    assert_eq!(ids(&all_pages(&app, "order=asc", 10).await), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataset_or_model_used_by_finished_jobs_is_deleted_only_with_cascade() {
    let app = spawn_app().await;
    let ds = digits_dataset(&app).await;
    let val = digits_dataset(&app).await;
    let model = digits_model(&app, 8).await;
    let mut body = job_body(&model, &ds, 1);
    body["validation"] = json!({"dataset_id": val});
    let job = submit(&app, &body).await["id"].as_str().unwrap().to_string();
    let saved = wait_finished(&app, &job).await["saved_model_id"]
        .as_str()
        .unwrap()
        .to_string();

    for path in [format!("/v1/datasets/{val}"), format!("/v1/models/{model}")] {
        let problem = assert_problem(app.delete(&path).await, 409).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains(&job) && detail.contains("cascade=true"),
            "{problem}"
        );
        assert_eq!(app.get(&path).await.status(), 200, "still there");
    }
    assert_eq!(app.get(&format!("/v1/jobs/{job}")).await.status(), 200);
    let res = app.delete(&format!("/v1/datasets/{val}?cascade=true")).await;
    assert_eq!(res.status(), 204);
    assert_problem(app.get(&format!("/v1/datasets/{val}")).await, 404).await;
    assert_problem(app.get(&format!("/v1/jobs/{job}")).await, 404).await;
    // Nothing uses the model or the training set any more.
    assert_eq!(app.delete(&format!("/v1/models/{model}")).await.status(), 204);
    assert_eq!(app.delete(&format!("/v1/datasets/{ds}")).await.status(), 204);
    assert_eq!(app.get(&format!("/v1/saved-models/{saved}")).await.status(), 200);
    // A query value that does not parse is a 422 naming the parameter, as everywhere.
    assert_problem(app.delete(&format!("/v1/datasets/{ds}?cascade=yes")).await, 422).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_aligns_histories_by_epoch_and_names_the_parameters_that_differ() {
    let app = spawn_app_with(|c| c.workers = 2).await;
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 8).await;
    let mut ids_ = Vec::new();
    for (epochs, lr) in [(1, 0.001), (3, 0.01), (2, 0.001)] {
        let mut body = labelled(&model, &ds, epochs, &format!("lr {lr}"), json!({"sweep": "lr"}));
        body["compile"]["optimizer"]["learning_rate"] = json!(lr);
        ids_.push(submit(&app, &body).await["id"].as_str().unwrap().to_string());
    }
    for id in &ids_ {
        wait_finished(&app, id).await;
    }
    let res = app.get(&format!("/v1/jobs/compare?ids={}", ids_.join(","))).await;
    assert_eq!(res.status(), 200);
    let c: Value = res.json().await.unwrap();
    assert_eq!(c["epoch"], json!([0, 1, 2]));
    let jobs = c["jobs"].as_array().unwrap();
    assert_eq!(ids(jobs), ids_);
    for (j, id) in jobs.iter().zip(&ids_) {
        let h: Value = app
            .get(&format!("/v1/jobs/{id}/history"))
            .await
            .json()
            .await
            .unwrap();
        let own = h["history"]["val_accuracy"].as_array().unwrap();
        let aligned = j["history"]["val_accuracy"].as_array().unwrap();
        assert_eq!(aligned.len(), 3);
        assert_eq!(&aligned[..own.len()], &own[..], "{id}");
        assert!(aligned[own.len()..].iter().all(Value::is_null), "{aligned:?}");
        assert_eq!(j["tags"], json!({"sweep": "lr"}));
    }
    assert_eq!(jobs[0]["name"], "lr 0.001");
    let differing: Vec<&str> = c["differing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(differing, ["compile.optimizer.learning_rate", "fit.epochs"]);
    let lr = c["params"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["path"] == "compile.optimizer.learning_rate")
        .unwrap();
    assert_eq!(lr["values"], json!([0.001, 0.01, 0.001]));
    assert_eq!(lr["differs"], true);
    let loss = c["params"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["path"] == "compile.loss")
        .unwrap();
    assert_eq!(loss["differs"], false);

    for q in [
        format!("ids={}", ids_[0]),
        "ids=".to_string(),
        format!("ids={0},{0}", ids_[0]),
        "x=1".to_string(),
    ] {
        let problem = assert_problem(app.get(&format!("/v1/jobs/compare?{q}")).await, 422).await;
        assert_eq!(error_fields(&problem), ["ids"], "{q}");
    }
    assert_problem(
        app.get(&format!("/v1/jobs/compare?ids={},nope", ids_[0])).await,
        404,
    )
    .await;
}
