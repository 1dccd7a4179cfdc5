//! The OpenAPI document: the checked-in `schemas/openapi.json` equals the
//! generated one, it covers every route of the router, every `$ref`
//! resolves, and a running server serves it and the docs page.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

mod common;

const REGEN: &str = "regenerate with: ARC_UPDATE_SCHEMAS=1 cargo test -p arc-control --test openapi";

fn checked_in() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/openapi.json")
}

fn generated() -> Value {
    serde_json::from_str(&arc_control::api::openapi::openapi_json()).expect("the document is JSON")
}

#[test]
fn checked_in_document_matches_the_code() {
    let text = arc_control::api::openapi::openapi_json();
    let path = checked_in();
    if std::env::var_os("ARC_UPDATE_SCHEMAS").is_some() {
        std::fs::write(&path, &text).expect("write schemas/openapi.json");
        return;
    }
    let on_disk =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}; {REGEN}", path.display()));
    assert!(on_disk == text, "schemas/openapi.json is out of date; {REGEN}");
}

/// `(METHOD, path)` of every `.route(...)` in the router's source.
fn routes_in_router() -> BTreeSet<(String, String)> {
    let source = include_str!("../src/api/mod.rs");
    let mut out = BTreeSet::new();
    for line in source.lines().map(str::trim).filter(|l| l.starts_with(".route(\"")) {
        let rest = &line[".route(\"".len()..];
        let Some((path, handlers)) = rest.split_once('"') else { continue };
        for method in ["get", "post", "put", "delete", "patch"] {
            if handlers.contains(&format!("{method}(")) {
                out.insert((method.to_uppercase(), path.to_owned()));
            }
        }
    }
    out
}

#[test]
fn every_route_is_documented_and_every_ref_resolves() {
    let doc = generated();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "delete", "patch"] {
            if let Some(op) = item.get(method) {
                documented.insert((method.to_uppercase(), path.clone()));
                assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path}: no responses");
                assert!(op.get("summary").is_some(), "{method} {path}: no summary (doc comment)");
                assert!(op["tags"].as_array().is_some_and(|t| !t.is_empty()), "{method} {path}: no tag");
            }
        }
    }
    let mut routed = routes_in_router();
    // Pages, not API operations.
    routed.remove(&("GET".into(), "/".into()));
    routed.remove(&("GET".into(), "/docs".into()));
    routed.remove(&("GET".into(), "/publish".into()));
    routed.remove(&("GET".into(), "/meet".into()));
    routed.remove(&("GET".into(), "/play".into()));
    // The /publish and /play pages' ICE restart script.
    routed.remove(&("GET".into(), "/ice-restart.js".into()));
    routed.remove(&("GET".into(), "/v1/openapi.json".into()));
    // The browser SDK's files (docs/sdk.md describes them).
    routed.remove(&("GET".into(), "/sdk/arc.js".into()));
    routed.remove(&("GET".into(), "/sdk/arc.d.ts".into()));
    assert!(routed.len() >= 30, "the router parse found only {routed:?}");
    let missing: Vec<_> = routed.difference(&documented).collect();
    assert!(missing.is_empty(), "routes without #[utoipa::path] in the document: {missing:?}");
    let stale: Vec<_> = documented.difference(&routed).collect();
    assert!(stale.is_empty(), "documented but not routed: {stale:?}");

    // Every $ref points at a component that exists.
    let schemas = doc["components"]["schemas"].as_object().expect("components.schemas");
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected $ref {r}"));
        assert!(schemas.contains_key(name), "$ref {r} does not resolve");
    }
    // Security schemes used by operations are declared.
    let schemes = doc["components"]["securitySchemes"].as_object().expect("securitySchemes");
    for name in ["admin", "app", "participant"] {
        assert!(schemes.contains_key(name), "security scheme {name}");
    }
    // The error body is what ApiError serializes.
    let error = &schemas["ErrorBody"];
    assert_eq!(error["required"], serde_json::json!(["error"]));
    let detail = &schemas["ErrorDetail"];
    assert_eq!(detail["required"], serde_json::json!(["code", "message"]));
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref"
                    && let Some(s) = v.as_str()
                {
                    out.push(s.to_owned());
                }
                collect_refs(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn a_running_server_serves_the_document_and_the_docs_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = common::start(&common::Mode::Embedded { data_dir: dir.path().to_path_buf() });
    let http = reqwest::Client::new();

    let response = http.get(format!("{}/v1/openapi.json", server.base)).send().await.expect("GET openapi.json");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let served: Value = response.json().await.expect("json");
    assert_eq!(served, generated());

    let response = http.get(format!("{}/docs", server.base)).send().await.expect("GET /docs");
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().expect("ascii").starts_with("text/html"));
    let page = response.text().await.expect("text");
    assert!(page.contains("/v1/openapi.json"), "the page loads the document");
    for external in ["src=\"http", "src='http", "href=\"http", "@import"] {
        assert!(!page.contains(external), "the docs page must not load anything external ({external})");
    }

    // Rejections axum produces itself are JSON too.
    let response = http
        .post(format!("{}/v1/apps", server.base))
        .bearer_auth(common::ADMIN_KEY)
        .body(vec![b'x'; 300 * 1024])
        .send()
        .await
        .expect("POST big body");
    assert_eq!(response.status(), 413);
    let v: Value = response.json().await.expect("json error");
    assert_eq!(v["error"]["code"], "body_too_large");
    let response = http
        .get(format!("{}/v1/rooms?limit=abc", server.base))
        .bearer_auth(common::ADMIN_KEY)
        .send()
        .await
        .expect("GET bad query");
    assert_eq!(response.status(), 400);
    let v: Value = response.json().await.expect("json error");
    assert_eq!(v["error"]["code"], "invalid_argument");
    let response = http.patch(format!("{}/v1/rooms", server.base)).send().await.expect("PATCH");
    assert_eq!(response.status(), 405);
    assert!(response.headers().contains_key("allow"));
    let v: Value = response.json().await.expect("json error");
    assert_eq!(v["error"]["code"], "method_not_allowed");
    let response =
        http.get(format!("{}/v1/rooms/%FF", server.base)).bearer_auth(common::ADMIN_KEY).send().await.expect("GET");
    assert_eq!(response.status(), 400);
    let v: Value = response.json().await.expect("json error");
    assert_eq!(v["error"]["code"], "invalid_argument");
}

/// The signalling protocol's JSON Schemas (`schemas/signal/`) equal the ones
/// generated from its types.
#[test]
fn signal_schemas_match_the_code() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/signal");
    let generated = arc_control::signal::protocol::schemas();
    if std::env::var_os("ARC_UPDATE_SCHEMAS").is_some() {
        std::fs::create_dir_all(&dir).expect("schemas/signal");
        for entry in std::fs::read_dir(&dir).expect("read schemas/signal") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "json") {
                std::fs::remove_file(path).expect("remove a stale schema");
            }
        }
        for (name, text) in &generated {
            std::fs::write(dir.join(name), text).expect("write a schema");
        }
        return;
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}; {REGEN}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".json"))
        .collect();
    on_disk.sort();
    let mut names: Vec<String> = generated.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    assert_eq!(on_disk, names, "schemas/signal holds other files; {REGEN}");
    for (name, text) in &generated {
        let current = std::fs::read_to_string(dir.join(name)).expect("read a schema");
        assert!(current == *text, "schemas/signal/{name} is out of date; {REGEN}");
    }
}
