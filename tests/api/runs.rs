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
