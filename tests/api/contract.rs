//! The contract between the spec and the server: one rule for query values and headers that do
//! not parse, every status an operation answers is documented, and bodies (SSE events included)
//! match the spec's schemas.

use serde_json::{Value, json};

use super::jobs::{digits_dataset, digits_model, job_body, read_events, submit, wait_finished};
use super::support::{assert_matches_response, assert_matches_schema, assert_problem, spawn_app, spec};

/// A value of a parameter's schema that cannot parse, if the schema can refuse one.
fn unparsable(schema: &Value) -> Option<&'static str> {
    let spec = spec();
    let schema = match schema["$ref"].as_str() {
        Some(r) => spec["components"]["schemas"][r.rsplit('/').next().unwrap()].clone(),
        None => schema.clone(),
    };
    let types: Vec<String> = match &schema["type"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(ts) => ts.iter().filter_map(|t| t.as_str().map(String::from)).collect(),
        _ => vec![],
    };
    // Integer headers are declared as digit strings (clients send headers as typed).
    let digits = schema["pattern"] == "^[0-9]+$";
    if schema["enum"].is_array() {
        Some("bogus")
    } else if digits || types.iter().any(|t| t == "integer" || t == "number") {
        Some("abc")
    } else if types.iter().any(|t| t == "boolean") {
        Some("maybe")
    } else {
        None
    }
}

#[tokio::test]
async fn query_values_and_headers_that_do_not_parse_are_422_naming_them_on_every_operation() {
    let app = spawn_app().await;
    let spec = spec();
    let mut checked = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                let (name, place) = (p["name"].as_str().unwrap(), p["in"].as_str().unwrap());
                let Some(bad) = unparsable(&p["schema"]) else {
                    continue;
                };
                if !matches!(place, "query" | "header") {
                    continue;
                }
                let url = path
                    .replace("{id}", "nope")
                    .replace("{version}", "1")
                    .replace("{sample}", "0");
                let url = match place {
                    "query" => app.url(&format!("{url}?{name}={bad}")),
                    _ => app.url(&url),
                };
                let mut req = match method.as_str() {
                    "get" => app.client.get(url),
                    "post" => app.client.post(url).json(&json!({})),
                    "delete" => app.client.delete(url),
                    other => panic!("unexpected method {other}"),
                };
                if place == "header" {
                    req = req.header(name, bad);
                }
                let res = req.send().await.unwrap();
                let problem = assert_problem(res, 422).await;
                assert_eq!(
                    problem["errors"][0]["field"], name,
                    "{method} {path} with {name}={bad}: {problem}"
                );
                assert!(
                    op["responses"]["422"]["description"]
                        .as_str()
                        .unwrap()
                        .contains("does not parse"),
                    "{method} {path} does not document the 422 for {name}"
                );
                checked.push(format!("{method} {path} {name}"));
            }
        }
    }
    // Lists' `limit`, jobs' `status`, History's `since`, events' `last_event_id` and
    // `Last-Event-ID`, KServe's `Inference-Header-Content-Length`.
    for needle in [
        "get /v1/jobs status",
        "get /v1/jobs limit",
        "get /v1/datasets limit",
        "get /v1/models limit",
        "get /v1/saved-models limit",
        "get /v1/jobs/{id}/history since",
        "get /v1/jobs/{id}/events last_event_id",
        "get /v1/jobs/{id}/events Last-Event-ID",
        "post /v2/models/{id}/infer Inference-Header-Content-Length",
    ] {
        assert!(
            checked.iter().any(|c| c == needle),
            "{needle} not checked: {checked:?}"
        );
    }
}

#[tokio::test]
async fn json_bodies_that_are_malformed_or_of_another_type_get_documented_statuses() {
    let app = spawn_app().await;
    let spec = spec();
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op["requestBody"]["content"]["application/json"].is_null() {
                continue;
            }
            let url = path.replace("{id}", "nope").replace("{version}", "1");
            for (ct, body) in [("application/json", "{\"a\": "), ("text/plain", "hello")] {
                let res = app
                    .client
                    .request(method.to_uppercase().parse().unwrap(), app.url(&url))
                    .header("content-type", ct)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = res.status().as_u16();
                let problem: Value = res.json().await.unwrap();
                assert!(
                    op["responses"][status.to_string()].is_object(),
                    "{method} {path} answered {status} to a {ct} body, which its spec lacks: {problem}"
                );
                assert_matches_response(&problem, method, path, status);
                checked += 1;
            }
            for status in ["400", "413", "415", "422"] {
                assert!(
                    op["responses"][status].is_object(),
                    "{method} {path} takes JSON but does not document {status}"
                );
            }
        }
    }
    assert!(checked >= 16, "only {checked} requests");
}

#[tokio::test]
async fn a_training_run_matches_the_spec_and_sse_epochs_equal_history_bit_for_bit() {
    let app = spawn_app().await;
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 16).await;
    let job = submit(&app, &job_body(&model, &ds, 3)).await;
    let id = job["id"].as_str().unwrap().to_string();
    assert_matches_response(&job, "post", "/v1/jobs", 202);
    let job = wait_finished(&app, &id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_matches_response(&job, "get", "/v1/jobs/{id}", 200);
    // One precision for every timestamp, and a job never starts before it was created nor ends
    // before it started.
    let at = |k: &str| {
        job[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k} in {job}"))
            .to_string()
    };
    let (created, started, finished) = (at("created_at"), at("started_at"), at("finished_at"));
    assert!(created <= started && started <= finished, "{job}");

    let events = read_events(&app, &id, None, 1000).await;
    let names = [
        ("status", "StatusEvent"),
        ("progress", "ProgressEvent"),
        ("epoch", "EpochEvent"),
        ("checkpoint", "CheckpointEvent"),
        ("done", "DoneEvent"),
    ];
    for ev in &events {
        let (_, schema) = names
            .iter()
            .find(|(n, _)| *n == ev.event)
            .unwrap_or_else(|| panic!("undocumented event {}", ev.event));
        assert_matches_schema(&ev.data, schema);
    }
    let res = app.get(&format!("/v1/jobs/{id}/history")).await;
    let history: Value = res.json().await.unwrap();
    assert_matches_response(&history, "get", "/v1/jobs/{id}/history", 200);
    let epochs: Vec<&Value> = events
        .iter()
        .filter(|e| e.event == "epoch")
        .map(|e| &e.data)
        .collect();
    assert_eq!(epochs.len(), 3);
    for key in ["loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"] {
        for (i, ev) in epochs.iter().enumerate() {
            let streamed = ev[key].as_f64().unwrap();
            let stored = history["history"][key][i].as_f64().unwrap();
            assert_eq!(
                streamed.to_bits(),
                stored.to_bits(),
                "{key} of epoch {i}: {streamed:?} streamed, {stored:?} in History"
            );
        }
    }

    let mut stamps = Vec::new();
    collect_timestamps(&job, &mut stamps);
    for (path, template) in [
        (format!("/v1/jobs/{id}/checkpoints"), "/v1/jobs/{id}/checkpoints"),
        ("/v1/jobs".to_string(), "/v1/jobs"),
        ("/v1/datasets".to_string(), "/v1/datasets"),
        ("/v1/models".to_string(), "/v1/models"),
        ("/v1/saved-models".to_string(), "/v1/saved-models"),
        (format!("/v1/datasets/{ds}"), "/v1/datasets/{id}"),
        (format!("/v1/models/{model}"), "/v1/models/{id}"),
    ] {
        let res = app.get(&path).await;
        assert_eq!(res.status(), 200, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_matches_response(&body, "get", template, 200);
        collect_timestamps(&body, &mut stamps);
    }
    assert!(stamps.len() >= 10, "{stamps:?}");
    for t in &stamps {
        // `2026-01-31T12:00:00.000Z`: UTC, milliseconds, one width.
        let b = t.as_bytes();
        assert!(
            b.len() == 24 && b[10] == b'T' && b[19] == b'.' && b[23] == b'Z',
            "timestamp {t} is not in the one stored form"
        );
    }
    let saved = job["saved_model_id"].as_str().unwrap();
    let res = app.get(&format!("/v1/saved-models/{saved}")).await;
    assert_matches_response(&res.json().await.unwrap(), "get", "/v1/saved-models/{id}", 200);
    let res = app
        .post_json(
            &format!("/v1/saved-models/{saved}/predict"),
            &json!({"instances": [vec![0.0; 64], vec![1.0; 64]]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["predictions"].as_array().unwrap().len(), 2, "{body}");
    assert_matches_response(&body, "post", "/v1/saved-models/{id}/predict", 200);
    let res = app
        .post_json(
            &format!("/v1/saved-models/{saved}/evaluate"),
            &json!({"dataset_id": ds}),
        )
        .await;
    assert_matches_response(
        &res.json().await.unwrap(),
        "post",
        "/v1/saved-models/{id}/evaluate",
        200,
    );
}

/// Every `*_at` string in `v`.
fn collect_timestamps(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                match x {
                    Value::String(t) if k.ends_with("_at") => out.push(t.clone()),
                    other => collect_timestamps(other, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|x| collect_timestamps(x, out)),
        _ => {}
    }
}
