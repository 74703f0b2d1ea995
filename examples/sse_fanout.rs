//! How many SSE subscribers one job sustains with no lost events: N clients subscribe to a queued
//! job, the job runs, and every client must receive every stored event (ids 1, 2, ... in order, each
//! epoch once) and a stream that ends after `done`.
//!
//! Usage: `cargo run --release --example sse_fanout -- [subscribers] [epochs]` (default 1000 and 20).

use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use fitd::config::Config;
use fitd::startup::Application;
use futures_util::StreamExt;
use serde_json::{Value, json};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let subscribers = args.first().copied().unwrap_or(1000);
    let epochs = args.get(1).copied().unwrap_or(20);
    let dir = tempfile::tempdir()?;
    let mut config = Config::for_tests(dir.path().join("fitd.db"));
    config.workers = 1;
    let app = Application::build(config).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let jobs = app.state().jobs.clone();
    tokio::spawn(app.run_until(std::future::pending()));
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        let req = client.post(format!("{base}{path}")).json(&body);
        async move { anyhow::Ok(req.send().await?.json::<Value>().await?) }
    };
    let ds = post("/v1/datasets", json!({"name": "digits", "source": "digits"})).await?;
    let model = post(
        "/v1/models",
        json!({"name": "m", "input_shape": [64], "layers": [
            {"type": "rescaling", "scale": 0.0625},
            {"type": "dense", "units": 512, "activation": "relu"},
            {"type": "dense", "units": 10, "activation": "softmax"}]}),
    )
    .await?;
    let body = |epochs: usize, batch: usize| {
        json!({"model_id": model["id"], "dataset_id": ds["id"], "validation": {"split": 0.2},
               "compile": {"optimizer": "adam", "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
               "fit": {"epochs": epochs, "batch_size": batch, "seed": 1}})
    };
    // Occupies the only worker while the subscribers connect.
    let blocker = post("/v1/jobs", body(100_000, 32)).await?;
    let job = post("/v1/jobs", body(epochs, 1)).await?;
    let id = job["id"].as_str().expect("job created").to_string();

    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let (client, url) = (client.clone(), format!("{base}/v1/jobs/{id}/events"));
        tasks.push(tokio::spawn(async move {
            let res = client.get(url).send().await.expect("subscribed");
            let mut stream = res.bytes_stream().eventsource();
            let mut got: Vec<(i64, String, Value)> = Vec::new();
            while let Some(ev) = stream.next().await {
                let ev = ev.expect("well-formed event");
                got.push((
                    ev.id.parse().unwrap(),
                    ev.event,
                    serde_json::from_str(&ev.data).unwrap(),
                ));
            }
            (got, Instant::now())
        }));
    }
    while jobs.hub().subscribers(&id) < subscribers {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "{subscribers} subscribers connected in {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    post(
        &format!("/v1/jobs/{}/cancel", blocker["id"].as_str().unwrap()),
        json!({}),
    )
    .await?;
    let started = Instant::now();

    let mut complete = 0;
    let mut progress = 0usize;
    let mut last_done = started;
    let expected_events = 2 + 2 * epochs + 2;
    for t in tasks {
        let (got, done_at) = t.await?;
        last_done = last_done.max(done_at);
        let stored: Vec<&(i64, String, Value)> = got.iter().filter(|(_, e, _)| e != "progress").collect();
        progress += got.len() - stored.len();
        let ids_ok = stored
            .iter()
            .enumerate()
            .all(|(i, (id, _, _))| *id == i as i64 + 1);
        let epochs_seen: Vec<i64> = stored
            .iter()
            .filter(|(_, e, _)| e == "epoch")
            .map(|(_, _, d)| d["epoch"].as_i64().unwrap())
            .collect();
        let ends_done = stored.last().is_some_and(|(_, e, _)| e == "done");
        if ids_ok
            && ends_done
            && stored.len() == expected_events
            && epochs_seen == (0..epochs as i64).collect::<Vec<_>>()
        {
            complete += 1;
        }
    }
    println!(
        "{complete}/{subscribers} subscribers received all {expected_events} stored events ({epochs} epochs) in \
         order, none twice, and saw the stream end; {:.1} progress events each on average; job + delivery took \
         {:.2} s",
        progress as f64 / subscribers as f64,
        last_done.duration_since(started).as_secs_f64()
    );
    if complete != subscribers {
        anyhow::bail!("{} subscribers lost events", subscribers - complete);
    }
    Ok(())
}
