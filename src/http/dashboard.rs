//! The dashboard: the single-page web UI in `web/`, embedded in the binary and served at `/` and `/assets/{file}`.
//!
//! The files are plain ES modules with no build step, so `include_bytes!` is all the bundling they
//! need and the dashboard works offline with nothing fetched from a CDN. It talks to the public API
//! only, like any other client.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// One embedded file of the dashboard.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../web/index.html"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../web/app.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/api.js"),
    },
    Asset {
        name: "dom.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/dom.js"),
    },
    Asset {
        name: "chart.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/chart.js"),
    },
    Asset {
        name: "datasets.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/datasets.js"),
    },
    Asset {
        name: "models.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/models.js"),
    },
    Asset {
        name: "jobs.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/jobs.js"),
    },
    Asset {
        name: "searches.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/searches.js"),
    },
    Asset {
        name: "saved.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/saved.js"),
    },
    Asset {
        name: "tokens.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/tokens.js"),
    },
];

/// Strong ETags, one per asset, computed once: the files change only with the binary.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let digest = Sha256::digest(a.body);
            HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..12])))
                .expect("a hex string is a valid header value")
        })
        .collect()
});

// The files have no content hash in their names, so a long max-age would keep an old app.js
// after an upgrade; `no-cache` makes the browser revalidate each time, which costs a 304.
const CACHE_CONTROL: &str = "no-cache";

// Everything the page loads comes from this origin; blob: is for sample images fetched with
// their X-Label header and turned into object URLs.
const CSP: &str = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// The dashboard's routes, mergeable into any router whatever its state.
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve(&file, &headers)
}

fn serve(name: &str, request: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        return not_found(name);
    };
    let asset = &ASSETS[i];
    let etag = &ETAGS[i];
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == etag.to_str().unwrap_or_default() || t.trim() == "*")
        });
    let common = [
        (header::ETAG, etag.clone()),
        (header::CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL)),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    let mut response = (
        StatusCode::OK,
        common,
        [(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type))],
        asset.body,
    )
        .into_response();
    if name == "index.html" {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    }
    response
}

fn not_found(name: &str) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": format!("the dashboard has no asset named {name:?}"),
    });
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt;

    async fn call(uri: &str, if_none_match: Option<&str>) -> Response {
        let mut req = Request::get(uri);
        if let Some(tag) = if_none_match {
            req = req.header(header::IF_NONE_MATCH, tag);
        }
        router::<()>()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn index_is_html_with_a_csp_and_an_etag() {
        let res = call("/", None).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(res.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        assert_eq!(res.headers()[header::CACHE_CONTROL], "no-cache");
        let body = to_bytes(res.into_body(), 1 << 20).await.unwrap();
        assert!(std::str::from_utf8(&body).unwrap().contains("/assets/app.js"));
    }

    #[tokio::test]
    async fn every_module_is_served_as_javascript() {
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let res = call(&format!("/assets/{}", asset.name), None).await;
            assert_eq!(res.status(), StatusCode::OK, "{}", asset.name);
            assert_eq!(
                res.headers()[header::CONTENT_TYPE],
                "text/javascript; charset=utf-8"
            );
        }
    }

    #[tokio::test]
    async fn every_module_import_names_an_embedded_asset() {
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(asset.body).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let target = line.rsplit("'./").next().unwrap().trim_end_matches("';");
                assert!(
                    ASSETS.iter().any(|a| a.name == target),
                    "{} imports {target}, which is not embedded",
                    asset.name
                );
            }
        }
    }

    #[tokio::test]
    async fn a_matching_etag_gets_304() {
        let first = call("/assets/app.css", None).await;
        let tag = first.headers()[header::ETAG].to_str().unwrap().to_string();
        let second = call("/assets/app.css", Some(&tag)).await;
        assert_eq!(second.status(), StatusCode::NOT_MODIFIED);
        let other = call("/assets/app.css", Some("\"something-else\"")).await;
        assert_eq!(other.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn an_unknown_asset_is_a_problem_404() {
        let res = call("/assets/nope.js", None).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/problem+json");
    }
}
