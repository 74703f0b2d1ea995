//! `/v1/searches`: validation naming fields, random search trials as jobs with a leaderboard and
//! the best saved model, ASHA stopping trials at rungs, Hyperband judging trials within brackets,
//! the search's SSE stream with replay, cancel, and resume after the process is killed.

use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::jobs::{Ev, Http, digits_dataset, digits_model, job_body, start_binary};
use super::support::{assert_problem, error_fields, spawn_app};

fn space() -> Value {
    json!([
        {"path": "compile.optimizer.learning_rate", "type": "log_uniform", "low": 1e-4, "high": 3e-2},
        {"path": "model.layers[1].units", "type": "int", "low": 8, "high": 48, "step": 8},
        {"path": "model.layers[2].rate", "type": "uniform", "low": 0.0, "high": 0.4}
    ])
}

fn search_body(model: &str, ds: &str, method: &str, epochs: u32, trials: u32) -> Value {
    json!({"base": job_body(model, ds, epochs), "space": space(),
           "objective": {"metric": "val_loss"}, "method": method,
           "max_trials": trials, "max_concurrent_trials": 2, "seed": 11})
}

async fn create(app: &impl Http, body: &Value) -> Value {
    let res = app.post_json("/v1/searches", body).await;
    let status = res.status();
    let location = res
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    let s: Value = res.json().await.unwrap();
    assert_eq!(status, 202, "{s}");
    assert_eq!(
        location.unwrap(),
        format!("/v1/searches/{}", s["id"].as_str().unwrap())
    );
    s
}

async fn get_search(app: &impl Http, id: &str) -> Value {
    let res = app.get(&format!("/v1/searches/{id}")).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn wait_search(app: &impl Http, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let s = get_search(app, id).await;
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "timed out; search is {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_ended(app: &impl Http, id: &str) -> Value {
    wait_search(app, id, |s| s["status"] != "running").await
}

async fn read_search_events(app: &impl Http, id: &str, last: Option<i64>) -> Vec<Ev> {
    let mut req = app.client().get(app.url(&format!("/v1/searches/{id}/events")));
    if let Some(l) = last {
        req = req.header("Last-Event-ID", l.to_string());
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 200);
    let mut stream = res.bytes_stream().eventsource();
    let mut out = Vec::new();
    let read = async {
        while let Some(ev) = stream.next().await {
            let ev = ev.expect("well-formed event");
            out.push(Ev {
                id: ev.id.parse().expect("numeric event id"),
                event: ev.event,
                data: serde_json::from_str(&ev.data).expect("JSON data"),
            });
        }
    };
    tokio::time::timeout(Duration::from_secs(300), read)
        .await
        .expect("the stream ends");
    out
}

#[tokio::test]
async fn create_search_names_every_invalid_field_and_404s_unknown_models() {
    let app = spawn_app().await;
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 16).await;
    let mut body = search_body(&model, &ds, "random", 2, 4);
    body["space"][0]["path"] = json!("dataset_id");
    body["space"][1]["high"] = json!(4);
    body["space"][2]["low"] = json!(0.5);
    body["space"][2]["high"] = json!(1.5);
    body["objective"]["metric"] = json!("f1");
    body["max_concurrent_trials"] = json!(0);
    let p = assert_problem(app.post_json("/v1/searches", &body).await, 422).await;
    assert_eq!(
        error_fields(&p),
        vec![
            "max_concurrent_trials",
            "objective.metric",
            "space[0].path",
            "space[1].high",
            "space[2].path"
        ],
        "{p}"
    );
    // The base job is checked as POST /v1/jobs checks it, its fields under `base`.
    let mut body = search_body(&model, &ds, "random", 2, 4);
    body["base"]["compile"]["loss"] = json!("hinge");
    let p = assert_problem(app.post_json("/v1/searches", &body).await, 422).await;
    assert_eq!(error_fields(&p), vec!["base.compile.loss"], "{p}");
    let mut body = search_body(&model, &ds, "grid", 2, 4);
    body["method"] = json!("bayes");
    let p = assert_problem(app.post_json("/v1/searches", &body).await, 422).await;
    assert_eq!(error_fields(&p), vec!["method"], "{p}");
    let body = search_body("no-such-model", &ds, "random", 2, 4);
    assert_problem(app.post_json("/v1/searches", &body).await, 404).await;
    assert_problem(app.get("/v1/searches/nope").await, 404).await;
    assert_problem(app.get("/v1/searches/nope/events").await, 404).await;
    // Nothing was queued by the refused requests.
    let jobs: Value = app.get("/v1/jobs").await.json().await.unwrap();
    assert_eq!(jobs["items"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn a_random_search_runs_trials_as_jobs_and_ranks_them_with_the_best_model_linked() {
    let app = spawn_app().await;
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 16).await;
    let body = search_body(&model, &ds, "random", 2, 5);
    let s = create(&app, &body).await;
    let id = s["id"].as_str().unwrap().to_string();
    assert_eq!(s["status"], "running");
    assert_eq!(s["trial_count"], 5);
    // An ordinary job submitted meanwhile shares the queue.
    let other = super::jobs::submit(&app, &job_body(&model, &ds, 1)).await;
    let s = wait_ended(&app, &id).await;
    assert_eq!(s["status"], "succeeded", "{s}");
    assert_eq!(s["trials_finished"], 5);
    let trials = s["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 5);
    let objectives: Vec<f64> = trials.iter().map(|t| t["objective"].as_f64().unwrap()).collect();
    assert!(
        objectives.windows(2).all(|w| w[0] <= w[1]),
        "sorted by val_loss: {objectives:?}"
    );
    let mut numbers: Vec<i64> = trials.iter().map(|t| t["trial"].as_i64().unwrap()).collect();
    numbers.sort();
    assert_eq!(numbers, vec![0, 1, 2, 3, 4]);
    for t in trials {
        assert_eq!(t["status"], "succeeded", "{t}");
        let job_id = t["job_id"].as_str().unwrap();
        let job: Value = app.get(&format!("/v1/jobs/{job_id}")).await.json().await.unwrap();
        assert_eq!(job["status"], "succeeded");
        assert_eq!(job["search"]["search_id"], id.as_str());
        assert_eq!(job["search"]["trial"], t["trial"]);
        assert_eq!(job["search"]["params"], t["params"]);
        // The job trains what the parameters say.
        let lr = t["params"]["compile.optimizer.learning_rate"].as_f64().unwrap();
        assert!((1e-4..=3e-2).contains(&lr));
        assert_eq!(
            job["request"]["compile"]["optimizer"]["learning_rate"]
                .as_f64()
                .unwrap(),
            lr
        );
        let m: Value = app
            .get(&format!("/v1/models/{}", job["model_id"].as_str().unwrap()))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            m["layers"][1]["units"], t["params"]["model.layers[1].units"],
            "{m}"
        );
        assert_eq!(m["layers"][2]["rate"], t["params"]["model.layers[2].rate"], "{m}");
        // The objective is the best val_loss of the job's History.
        let h: Value = app
            .get(&format!("/v1/jobs/{job_id}/history"))
            .await
            .json()
            .await
            .unwrap();
        let best = h["history"]["val_loss"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .fold(f64::INFINITY, f64::min);
        assert_eq!(t["objective"].as_f64().unwrap(), best);
    }
    assert_eq!(s["best"]["trial"], trials[0]["trial"]);
    assert_eq!(s["best"]["objective"], trials[0]["objective"]);
    let best_model = s["best"]["saved_model_id"].as_str().unwrap();
    assert_eq!(trials[0]["saved_model_id"].as_str().unwrap(), best_model);
    assert_eq!(
        app.get(&format!("/v1/saved-models/{best_model}")).await.status(),
        200
    );
    // The ordinary job ran too, and carries no search.
    let other = super::jobs::wait_finished(&app, other["id"].as_str().unwrap()).await;
    assert_eq!(other["status"], "succeeded");
    assert!(other.get("search").is_none(), "{other}");
    // Trials are jobs in /v1/jobs: 5 of them plus the ordinary one.
    let jobs: Value = app.get("/v1/jobs").await.json().await.unwrap();
    let items = jobs["items"].as_array().unwrap();
    assert_eq!(items.len(), 6);
    assert_eq!(
        items
            .iter()
            .filter(|j| j["search"]["search_id"] == id.as_str())
            .count(),
        5
    );
    // The same seed draws the same parameters.
    let again = create(&app, &body).await;
    let again_id = again["id"].as_str().unwrap();
    let first_two = |s: &Value| {
        let mut t: Vec<(i64, Value)> = s["trials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["trial"].as_i64().unwrap(), t["params"].clone()))
            .filter(|(n, _)| *n < 2)
            .collect();
        t.sort_by_key(|x| x.0);
        t
    };
    assert_eq!(first_two(&again), first_two(&s));
    let res = app
        .post_json(&format!("/v1/searches/{again_id}/cancel"), &json!({}))
        .await;
    assert_eq!(res.status(), 202);
    let list: Value = app.get("/v1/searches").await.json().await.unwrap();
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![id.as_str(), again_id]);
}

#[tokio::test]
async fn asha_stops_trials_at_rungs_and_the_stream_replays_from_last_event_id() {
    let app = spawn_app().await;
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 16).await;
    let mut body = search_body(&model, &ds, "asha", 4, 8);
    body["min_epochs"] = json!(1);
    body["reduction_factor"] = json!(2);
    let s = create(&app, &body).await;
    let id = s["id"].as_str().unwrap().to_string();
    let events = read_search_events(&app, &id, None).await;
    let s = get_search(&app, &id).await;
    assert_eq!(s["status"], "succeeded", "{s}");
    let trials = s["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 8);
    let stopped: Vec<&Value> = trials.iter().filter(|t| t["status"] == "stopped").collect();
    let full: Vec<&Value> = trials.iter().filter(|t| t["status"] == "succeeded").collect();
    assert_eq!(stopped.len() + full.len(), 8, "{trials:?}");
    assert!(!stopped.is_empty() && !full.is_empty(), "{trials:?}");
    for t in &stopped {
        // Rungs are at 1 and 2 epochs: a trial stopped at rung r trained rungs[r] epochs.
        let rung = t["stopped_rung"].as_i64().unwrap();
        assert_eq!(t["epoch"].as_i64().unwrap(), [0, 1][rung as usize], "{t}");
        let job: Value = app
            .get(&format!("/v1/jobs/{}", t["job_id"].as_str().unwrap()))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(job["status"], "succeeded");
        assert_eq!(job["stop_reason"], "early_stopping");
    }
    for t in &full {
        assert_eq!(t["epoch"], 3, "{t}");
        assert_eq!(t["promoted_rung"], 1, "{t}");
    }
    // The stream: ids 1, 2, ... in order, every kind of event, `done` last with the best trial.
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=events.len() as i64).collect::<Vec<_>>());
    let count = |name: &str| events.iter().filter(|e| e.event == name).count();
    assert_eq!(count("trial_started"), 8);
    assert_eq!(count("trial_finished"), 8);
    assert_eq!(count("trial_stopped"), stopped.len());
    assert!(count("trial_promoted") >= full.len() * 2);
    let epochs: i64 = trials.iter().map(|t| t["epoch"].as_i64().unwrap() + 1).sum();
    assert_eq!(count("trial_epoch") as i64, epochs);
    let done = events.last().unwrap();
    assert_eq!(done.event, "done");
    assert_eq!(count("done"), 1);
    assert_eq!(done.data["status"], "succeeded");
    assert_eq!(done.data["best_trial"], s["best"]["trial"]);
    assert_eq!(done.data["best_saved_model_id"], s["best"]["saved_model_id"]);
    // Each stop decision is justified by the rung's earlier results.
    for e in events
        .iter()
        .filter(|e| e.event == "trial_stopped" || e.event == "trial_promoted")
    {
        assert!(e.data["rung_results"].as_i64().unwrap() >= 1);
        assert!(e.data["objective"].is_f64(), "{:?}", e.data);
    }
    // Reconnecting after event k replays exactly the events after it.
    let k = events.len() as i64 / 2;
    let replay = read_search_events(&app, &id, Some(k)).await;
    let replay_ids: Vec<i64> = replay.iter().map(|e| e.id).collect();
    assert_eq!(replay_ids, ((k + 1)..=events.len() as i64).collect::<Vec<_>>());
    assert_eq!(replay.last().unwrap().event, "done");
}

#[tokio::test]
async fn hyperband_judges_each_trial_only_within_its_bracket_at_that_brackets_rungs() {
    let app = spawn_app().await;
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 16).await;
    // 4 epochs, factor 2: brackets of 4, 3 and 3 trials with rungs at [1, 2], [2] and none.
    let mut body = search_body(&model, &ds, "hyperband", 4, 10);
    body["min_epochs"] = json!(1);
    body["reduction_factor"] = json!(2);
    body["max_concurrent_trials"] = json!(3);
    let s = create(&app, &body).await;
    let id = s["id"].as_str().unwrap().to_string();
    let events = read_search_events(&app, &id, None).await;
    let s = get_search(&app, &id).await;
    assert_eq!(s["status"], "succeeded", "{s}");
    let trials = s["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 10);
    let bracket_of = |n: i64| match n {
        0..=3 => 2,
        4..=6 => 1,
        _ => 0,
    };
    // Epochs each bracket's rungs are at.
    let rung_epochs = |b: i64| match b {
        2 => vec![1, 2],
        1 => vec![2],
        _ => vec![],
    };
    for t in trials {
        let n = t["trial"].as_i64().unwrap();
        let b = bracket_of(n);
        assert_eq!(t["bracket"], b, "{t}");
        let epochs = t["epoch"].as_i64().unwrap() + 1;
        match t["status"].as_str().unwrap() {
            "stopped" => {
                let rung = t["stopped_rung"].as_i64().unwrap() as usize;
                assert_eq!(epochs, rung_epochs(b)[rung], "{t}");
            }
            "succeeded" => {
                assert_eq!(epochs, 4, "{t}");
                let promoted = t["promoted_rung"].as_i64();
                assert_eq!(promoted, (b > 0).then_some(b - 1), "{t}");
            }
            other => panic!("trial {n} ended {other}: {t}"),
        }
    }
    // The last bracket trains every trial fully. (Which trials of the other brackets stop depends on
    // the order they reach a rung: an arrival better than every earlier one always goes on.)
    assert!(
        trials
            .iter()
            .filter(|t| t["bracket"] == 0)
            .all(|t| t["status"] == "succeeded")
    );
    // Decisions at a rung count only the trials of the same bracket: at each (bracket, rung) the
    // results seen go 1, 2, 3, ... however the brackets' trials interleave.
    let mut seen: std::collections::BTreeMap<(i64, i64), Vec<i64>> = Default::default();
    for e in events
        .iter()
        .filter(|e| e.event == "trial_stopped" || e.event == "trial_promoted")
    {
        let b = e.data["bracket"].as_i64().unwrap();
        assert_eq!(b, bracket_of(e.data["trial"].as_i64().unwrap()), "{:?}", e.data);
        assert_eq!(
            e.data["epochs"].as_i64().unwrap(),
            rung_epochs(b)[e.data["rung"].as_u64().unwrap() as usize]
        );
        seen.entry((b, e.data["rung"].as_i64().unwrap()))
            .or_default()
            .push(e.data["rung_results"].as_i64().unwrap());
    }
    assert!(
        seen.contains_key(&(2, 0)) && seen.contains_key(&(1, 0)),
        "{seen:?}"
    );
    for (key, counts) in &seen {
        assert_eq!(*counts, (1..=counts.len() as i64).collect::<Vec<_>>(), "{key:?}");
    }
    // Bracket 1's rung 0 saw all 3 of its trials; bracket 2's rung 0 all 4.
    assert_eq!(seen[&(1, 0)].len(), 3);
    assert_eq!(seen[&(2, 0)].len(), 4);
    let started: Vec<i64> = events
        .iter()
        .filter(|e| e.event == "trial_started")
        .map(|e| e.data["bracket"].as_i64().unwrap())
        .collect();
    assert_eq!(started.len(), 10);
}

#[tokio::test]
async fn cancel_stops_the_whole_search() {
    let app = spawn_app().await;
    let ds = digits_dataset(&app).await;
    let model = digits_model(&app, 256).await;
    let body = search_body(&model, &ds, "random", 200, 10);
    let s = create(&app, &body).await;
    let id = s["id"].as_str().unwrap().to_string();
    // Two trials were queued; wait until one trains.
    wait_search(&app, &id, |s| {
        s["trials"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["status"] == "running")
    })
    .await;
    let res = app
        .post_json(&format!("/v1/searches/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(res.status(), 202);
    let s = wait_ended(&app, &id).await;
    assert_eq!(s["status"], "cancelled", "{s}");
    let trials = s["trials"].as_array().unwrap();
    assert_eq!(
        trials.len(),
        2,
        "no trial was started after the cancel: {trials:?}"
    );
    for t in trials {
        assert_eq!(t["status"], "cancelled", "{t}");
    }
    let events = read_search_events(&app, &id, None).await;
    assert_eq!(events.last().unwrap().event, "done");
    assert_eq!(events.last().unwrap().data["status"], "cancelled");
    let p = assert_problem(
        app.post_json(&format!("/v1/searches/{id}/cancel"), &json!({}))
            .await,
        409,
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("cancelled"), "{p}");
}

/// The finished trials and rung decisions of a leaderboard, for comparing before and after a crash.
fn settled(s: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = s["trials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| !matches!(t["status"].as_str(), Some("running" | "queued")))
        .map(|t| {
            json!([
                t["trial"],
                t["job_id"],
                t["status"],
                t["params"],
                t["objective"],
                t["stopped_rung"],
                t["promoted_rung"]
            ])
        })
        .collect();
    out.sort_by_key(|v| v[0].as_i64());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_killed_mid_way_resumes_without_rerunning_or_changing_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let db = super::support::test_db(dir.path()).await;
    let mut srv = start_binary(&db, 1).await;
    let ds = digits_dataset(&srv.app).await;
    let model = digits_model(&srv.app, 64).await;
    // Hyperband: brackets of 4, 3 and 3 trials, so the restart falls in the first or second.
    let mut body = search_body(&model, &ds, "hyperband", 4, 6);
    body["min_epochs"] = json!(1);
    body["reduction_factor"] = json!(2);
    body["max_concurrent_trials"] = json!(1);
    let s = create(&srv.app, &body).await;
    let id = s["id"].as_str().unwrap().to_string();
    let before = wait_search(&srv.app, &id, |s| s["trials_finished"].as_i64().unwrap() >= 3).await;
    srv.child.kill().unwrap();
    srv.child.wait().unwrap();
    let before = settled(&before);
    assert!(before.len() >= 3);
    let attempts = |j: &Value| j["attempts"].as_i64().unwrap();
    let mut srv = start_binary(&db, 1).await;
    let mut before_attempts = Vec::new();
    for t in &before {
        let job: Value = srv
            .app
            .get(&format!("/v1/jobs/{}", t[1].as_str().unwrap()))
            .await
            .json()
            .await
            .unwrap();
        before_attempts.push(attempts(&job));
    }
    let after = wait_ended(&srv.app, &id).await;
    assert_eq!(after["status"], "succeeded", "{after}");
    assert_eq!(after["trials"].as_array().unwrap().len(), 6);
    let after_settled = settled(&after);
    // What had finished is unchanged: same jobs, statuses, objectives and rung decisions...
    for t in &before {
        assert!(after_settled.contains(t), "{t} changed: {after_settled:?}");
    }
    // ...and was not run again.
    for (t, a) in before.iter().zip(before_attempts) {
        let job: Value = srv
            .app
            .get(&format!("/v1/jobs/{}", t[1].as_str().unwrap()))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(attempts(&job), a, "{job}");
        assert_eq!(a, 1);
    }
    // The trials created after the restart have the parameters the seed gives: those of the same
    // search in a fresh server.
    let fresh = spawn_app().await;
    let ds2 = digits_dataset(&fresh).await;
    let model2 = digits_model(&fresh, 64).await;
    let mut body2 = body.clone();
    body2["base"] = job_body(&model2, &ds2, 4);
    body2["max_concurrent_trials"] = json!(6);
    let s2 = create(&fresh, &body2).await;
    let params = |s: &Value| {
        let mut v: Vec<(i64, Value)> = s["trials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["trial"].as_i64().unwrap(), t["params"].clone()))
            .collect();
        v.sort_by_key(|x| x.0);
        v
    };
    assert_eq!(params(&after), params(&s2));
    let id2 = s2["id"].as_str().unwrap();
    fresh
        .post_json(&format!("/v1/searches/{id2}/cancel"), &json!({}))
        .await;
    srv.child.kill().unwrap();
    srv.child.wait().unwrap();
}
