//! The committed `openapi/openapi.yaml` matches the code, and the served spec and docs work.

use super::support::spawn_app;

#[test]
fn the_committed_openapi_yaml_matches_the_code() {
    let generated = fitd::http::openapi_yaml().expect("the spec renders as YAML");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/openapi.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        generated == committed,
        "openapi/openapi.yaml is out of date with the code; regenerate it with\n    \
         cargo run -- openapi > openapi/openapi.yaml"
    );
}

#[test]
fn every_operation_has_an_operation_id_and_every_response_a_description() {
    let spec = serde_json::to_value(fitd::http::openapi()).unwrap();
    let mut ops = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops += 1;
            assert!(
                op["operationId"].is_string(),
                "{method} {path} has no operationId"
            );
            for (status, res) in op["responses"].as_object().unwrap() {
                assert!(
                    res["description"].is_string(),
                    "{method} {path} {status} has no description"
                );
            }
        }
    }
    assert!(ops >= 14, "only {ops} operations documented");
}

#[tokio::test]
async fn the_spec_is_served_as_json_and_swagger_ui_works_offline() {
    let app = spawn_app().await;
    let served: serde_json::Value = app.get("/openapi.json").await.json().await.unwrap();
    assert_eq!(served, serde_json::to_value(fitd::http::openapi()).unwrap());
    let res = app.get("/docs/").await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("swagger"), "{html}");
    assert_eq!(app.get("/docs/swagger-ui-bundle.js").await.status(), 200);
}
