//! API tokens: every route's 401/403 answers (generated from the OpenAPI document, so a new route is
//! covered the day it is added), revocation taking effect at once, the CLI on the database, and the
//! refusal to serve a non-loopback address without tokens.

use std::process::Command;

use reqwest::Method;
use serde_json::{Value, json};

use super::support::{TestApp, assert_problem, spawn_app, spawn_app_with};

const SCOPES: [&str; 4] = ["read", "train", "predict", "admin"];

/// Operations answered without a token, by `METHOD path`.
const PUBLIC: [&str; 7] = [
    "DELETE /v1/session",
    "GET /healthz",
    "GET /readyz",
    "GET /v1/session",
    "GET /v2/health/live",
    "GET /v2/health/ready",
    "POST /v1/session",
];

async fn send(app: &TestApp, method: Method, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = app.client.request(method, app.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("request sent")
}

/// Creates a token over HTTP (with `admin`, or on an open server without it); returns (id, token).
async fn create_token(app: &TestApp, admin: Option<&str>, name: &str, scopes: &[&str]) -> (String, String) {
    let mut req = app
        .client
        .post(app.url("/v1/tokens"))
        .json(&json!({"name": name, "scopes": scopes}));
    if let Some(t) = admin {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    (
        body["id"].as_str().unwrap().to_string(),
        body["token"].as_str().unwrap().to_string(),
    )
}

/// `METHOD path` of every operation in the served spec, its path with parameters filled in, and
/// the scope its `security` names (`None` for `security: []`).
fn operations(spec: &Value) -> Vec<(Method, String, String, Option<String>)> {
    let mut ops = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Ok(m) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            let security = op["security"]
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path} has no security"));
            let scope = security
                .first()
                .map(|req| req["bearer"][0].as_str().expect("a bearer scope").to_string());
            let mut concrete = String::new();
            let mut in_param = false;
            for c in path.chars() {
                match c {
                    '{' => in_param = true,
                    '}' => {
                        in_param = false;
                        concrete.push('1');
                    }
                    _ if in_param => {}
                    _ => concrete.push(c),
                }
            }
            ops.push((m, path.clone(), concrete, scope));
        }
    }
    ops
}

#[tokio::test]
async fn every_operation_answers_401_without_a_valid_token_and_403_without_its_scope() {
    let app = spawn_app().await;
    // Open until the first token exists: the first admin token is created without one.
    let (_, admin) = create_token(&app, None, "admin", &SCOPES).await;
    let mut lacking = std::collections::HashMap::new();
    for scope in SCOPES {
        let others: Vec<&str> = SCOPES.iter().copied().filter(|s| *s != scope).collect();
        lacking.insert(
            scope,
            create_token(&app, Some(&admin), &format!("no-{scope}"), &others)
                .await
                .1,
        );
    }
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    let ops = operations(&spec);
    assert!(ops.len() >= 40, "only {} operations", ops.len());
    let mut public = Vec::new();
    for (method, template, path, scope) in &ops {
        let what = format!("{method} {template}");
        let Some(scope) = scope else {
            public.push(what.clone());
            let status = send(&app, method.clone(), path, None).await.status().as_u16();
            assert!(
                status != 401 && status != 403 && status < 500,
                "{what} is public but answered {status}"
            );
            continue;
        };
        let res = send(&app, method.clone(), path, None).await;
        assert!(
            res.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer"),
            "{what}"
        );
        let p = assert_problem(res, 401).await;
        assert_eq!(p["type"], "urn:fitd:problem:unauthorized", "{what}");

        let forged = format!("fitd_{}", "0".repeat(64));
        assert_problem(send(&app, method.clone(), path, Some(&forged)).await, 401).await;

        let res = send(&app, method.clone(), path, Some(&lacking[scope.as_str()])).await;
        let www = res.headers()["www-authenticate"].to_str().unwrap().to_string();
        assert!(www.contains(&format!("scope=\"{scope}\"")), "{what}: {www}");
        let p = assert_problem(res, 403).await;
        assert_eq!(p["type"], "urn:fitd:problem:forbidden", "{what}");
        assert!(
            p["detail"].as_str().unwrap().contains(scope.as_str()),
            "{what}: {p}"
        );

        // With the scope the request gets past authentication (and fails later on the fake id or
        // missing body, never with 401 or 403).
        let status = send(&app, method.clone(), path, Some(&admin))
            .await
            .status()
            .as_u16();
        assert!(
            status != 401 && status != 403 && status < 500,
            "{what} with every scope: {status}"
        );
    }
    public.sort();
    assert_eq!(public, PUBLIC, "the operations answered without a token");

    // The scopes the spec declares for a few well-known routes.
    let scope_of = |m: &str, p: &str| {
        ops.iter()
            .find(|(method, t, _, _)| method.as_str() == m && t == p)
            .and_then(|o| o.3.clone())
            .unwrap_or_else(|| panic!("{m} {p} not in the spec"))
    };
    assert_eq!(scope_of("GET", "/v1/jobs"), "read");
    assert_eq!(scope_of("POST", "/v1/jobs"), "train");
    assert_eq!(scope_of("POST", "/v1/datasets"), "train");
    assert_eq!(scope_of("POST", "/v1/saved-models/{id}/predict"), "predict");
    assert_eq!(scope_of("POST", "/v2/models/{id}/infer"), "predict");
    assert_eq!(scope_of("GET", "/v1/tokens"), "admin");

    // Routes outside the spec: the dashboard, its files and the docs are public; anything else,
    // unknown paths included, needs a token.
    for path in ["/", "/assets/app.js", "/docs/", "/openapi.json"] {
        assert_eq!(send(&app, Method::GET, path, None).await.status(), 200, "{path}");
    }
    assert_problem(send(&app, Method::GET, "/v1/no-such-route", None).await, 401).await;
    assert_problem(
        send(&app, Method::GET, "/v1/no-such-route", Some(&admin)).await,
        404,
    )
    .await;
}

#[tokio::test]
async fn a_revoked_token_is_refused_on_the_next_request() {
    let app = spawn_app().await;
    let (_, admin) = create_token(&app, None, "admin", &["admin"]).await;
    let (id, reader) = create_token(&app, Some(&admin), "reader", &["read"]).await;
    assert_eq!(
        send(&app, Method::GET, "/v1/datasets", Some(&reader))
            .await
            .status(),
        200
    );

    let res = send(&app, Method::DELETE, &format!("/v1/tokens/{id}"), Some(&admin)).await;
    assert_eq!(res.status(), 200);
    let revoked: Value = res.json().await.unwrap();
    assert!(revoked["revoked_at"].is_string(), "{revoked}");

    let p = assert_problem(send(&app, Method::GET, "/v1/datasets", Some(&reader)).await, 401).await;
    assert!(p["detail"].as_str().unwrap().contains("revoked"), "{p}");
    // Revoking the last non-admin token does not reopen the server.
    assert_problem(send(&app, Method::GET, "/v1/datasets", None).await, 401).await;
    assert_problem(
        send(&app, Method::DELETE, "/v1/tokens/nope", Some(&admin)).await,
        404,
    )
    .await;
}

#[tokio::test]
async fn tokens_are_listed_without_secrets_and_bad_requests_name_the_field() {
    let app = spawn_app().await;
    let (id, admin) = create_token(&app, None, "admin", &["admin", "read"]).await;
    let list = send(&app, Method::GET, "/v1/tokens", Some(&admin)).await;
    assert_eq!(list.status(), 200);
    let text = list.text().await.unwrap();
    assert!(!text.contains(&admin), "the secret is listed: {text}");
    let list: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(list["items"][0]["id"], id.as_str());
    assert_eq!(list["items"][0]["scopes"], json!(["read", "admin"]));
    assert!(admin.starts_with(list["items"][0]["prefix"].as_str().unwrap()));

    let bad = app
        .client
        .post(app.url("/v1/tokens"))
        .bearer_auth(&admin)
        .json(&json!({"name": "", "scopes": ["read", "write"]}))
        .send()
        .await
        .unwrap();
    let p = assert_problem(bad, 422).await;
    assert_eq!(super::support::error_fields(&p), ["name", "scopes[1]"]);
}

fn fitd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fitd"))
        .args(args)
        .env_remove("FITD_DB")
        .output()
        .expect("the fitd binary runs")
}

#[tokio::test]
async fn the_token_cli_creates_lists_and_revokes_on_the_database_of_a_running_server() {
    let mut token = String::new();
    let app = spawn_app_with(|c| {
        let db = c.db.to_url();
        let out = fitd(&[
            "token",
            "create",
            "--db",
            &db,
            "--scope",
            "read,predict",
            "--name",
            "ci",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    })
    .await;
    assert!(token.starts_with("fitd_") && token.len() == 69, "{token:?}");
    let db = app.db().to_url();

    let out = fitd(&["token", "list", "--db", &db]);
    let listed = String::from_utf8(out.stdout).unwrap();
    assert!(
        listed.contains("read,predict") && listed.contains("ci"),
        "{listed}"
    );
    assert!(!listed.contains(&token), "the secret is listed: {listed}");
    let id = listed
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();

    assert_eq!(
        send(&app, Method::GET, "/v1/jobs", Some(&token)).await.status(),
        200
    );
    assert_problem(send(&app, Method::GET, "/v1/jobs", None).await, 401).await;
    assert_problem(send(&app, Method::POST, "/v1/models", Some(&token)).await, 403).await;

    // Revoked from another process while the server runs: refused from the next request on.
    let out = fitd(&["token", "revoke", "--db", &db, &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_problem(send(&app, Method::GET, "/v1/jobs", Some(&token)).await, 401).await;
    let out = fitd(&["token", "revoke", "--db", &db, "no-such-id"]);
    assert!(!out.status.success());

    let bad = fitd(&["token", "create", "--db", &db, "--scope", "write", "--name", "x"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown scope"));
}

#[tokio::test]
async fn a_non_loopback_address_needs_tokens_or_an_explicit_opt_out() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fitd.db");
    let out = fitd(&["serve", "--addr", "0.0.0.0:0", "--db", db.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to serve"), "{stderr}");

    let mut config = fitd::config::Config::for_tests(db.clone());
    config.addr = "0.0.0.0:0".parse().unwrap();
    config.insecure_no_auth = true;
    drop(
        fitd::startup::Application::build(config.clone())
            .await
            .expect("starts with --insecure-no-auth"),
    );

    // A token file (a Docker secret) registers an admin token; the server then starts and requires it.
    let secret = "0123456789abcdef0123456789abcdef-from-a-secret";
    let file = dir.path().join("admin-token");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let app = spawn_app_with(|c| {
        c.db = fitd::store::Db::Sqlite(db.clone());
        c.data_dir = None;
        c.addr = "0.0.0.0:0".parse().unwrap();
        c.admin_token_file = Some(file.clone());
    })
    .await;
    assert_problem(send(&app, Method::GET, "/v1/tokens", None).await, 401).await;
    let res = send(&app, Method::GET, "/v1/tokens", Some(secret)).await;
    assert_eq!(res.status(), 200);
    let list: Value = res.json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["items"][0]["scopes"], json!(SCOPES));
}

fn set_cookie(res: &reqwest::Response) -> String {
    res.headers()["set-cookie"].to_str().unwrap().to_string()
}

async fn with_cookie(app: &TestApp, method: Method, path: &str, cookie: &str) -> reqwest::Response {
    app.client
        .request(method, app.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

async fn post_as(app: &TestApp, token: &str, path: &str, body: &Value) -> Value {
    let res = app
        .client
        .post(app.url(path))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{path}: {}", res.status());
    res.json().await.unwrap()
}

#[tokio::test]
async fn the_dashboard_signs_in_with_a_token_into_an_http_only_strict_cookie_that_revoke_ends() {
    let app = spawn_app().await;
    let (_, admin) = create_token(&app, None, "admin", &SCOPES).await;
    let (reader_id, reader) = create_token(&app, Some(&admin), "reader", &["read"]).await;

    let anon: Value = app.get("/v1/session").await.json().await.unwrap();
    assert_eq!(
        anon,
        json!({"auth_required": true, "signed_in": false, "name": null, "scopes": []})
    );
    let wrong = app
        .post_json("/v1/session", &json!({"token": "fitd_wrong"}))
        .await;
    assert!(!wrong.headers().contains_key("set-cookie"));
    assert_problem(wrong, 401).await;

    let res = app.post_json("/v1/session", &json!({"token": reader})).await;
    assert_eq!(res.status(), 200);
    let set = set_cookie(&res);
    for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(part), "{set}");
    }
    assert!(!set.contains(&reader), "the cookie holds the token: {set}");
    let cookie = set.split(';').next().unwrap().to_string();
    assert!(cookie.starts_with("fitd_session="), "{cookie}");
    let me: Value = res.json().await.unwrap();
    assert_eq!(me["name"], "reader");
    assert_eq!(me["scopes"], json!(["read"]));

    // The cookie authenticates API calls and event streams (EventSource sends cookies, not headers).
    assert_eq!(
        with_cookie(&app, Method::GET, "/v1/datasets", &cookie)
            .await
            .status(),
        200
    );
    let me: Value = with_cookie(&app, Method::GET, "/v1/session", &cookie)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["signed_in"], true);
    assert_problem(with_cookie(&app, Method::POST, "/v1/models", &cookie).await, 403).await;
    let ds = post_as(
        &app,
        &admin,
        "/v1/datasets",
        &json!({"name": "digits", "source": "digits"}),
    )
    .await;
    let model = post_as(
        &app,
        &admin,
        "/v1/models",
        &json!({"name": "m", "input_shape": [64],
                "layers": [{"type": "dense", "units": 10, "activation": "softmax"}]}),
    )
    .await;
    let body = super::jobs::job_body(model["id"].as_str().unwrap(), ds["id"].as_str().unwrap(), 1);
    let job = post_as(&app, &admin, "/v1/jobs", &body).await;
    let path = format!("/v1/jobs/{}/events", job["id"].as_str().unwrap());
    let events = with_cookie(&app, Method::GET, &path, &cookie).await;
    assert_eq!(events.status(), 200);
    let ct = events.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    drop(events);

    // Revoking the token ends its sessions at once.
    let res = send(
        &app,
        Method::DELETE,
        &format!("/v1/tokens/{reader_id}"),
        Some(&admin),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_problem(with_cookie(&app, Method::GET, "/v1/datasets", &cookie).await, 401).await;

    // Signing out ends the session and clears the cookie.
    let res = app.post_json("/v1/session", &json!({"token": admin})).await;
    let cookie = set_cookie(&res).split(';').next().unwrap().to_string();
    assert_eq!(
        with_cookie(&app, Method::GET, "/v1/tokens", &cookie)
            .await
            .status(),
        200
    );
    let out = with_cookie(&app, Method::DELETE, "/v1/session", &cookie).await;
    assert_eq!(out.status(), 204);
    assert!(set_cookie(&out).contains("Max-Age=0"), "{}", set_cookie(&out));
    assert_problem(with_cookie(&app, Method::GET, "/v1/tokens", &cookie).await, 401).await;
}

#[tokio::test]
async fn an_open_server_starts_requiring_tokens_soon_after_the_cli_creates_one() {
    let app = spawn_app().await;
    assert_eq!(send(&app, Method::GET, "/v1/jobs", None).await.status(), 200);
    let db = app.db().to_url();
    let out = fitd(&[
        "token", "create", "--db", &db, "--scope", "read", "--name", "late",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    // An open server looks at the token table at most once a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while send(&app, Method::GET, "/v1/jobs", None).await.status() != 401 {
        assert!(
            std::time::Instant::now() < deadline,
            "still open after a token was created"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        send(&app, Method::GET, "/v1/jobs", Some(&token)).await.status(),
        200
    );
}
