//! OpenTelemetry traces: with `ARC_OTLP_ENDPOINT` set on `arc-control serve`
//! and on an `arc-media` node, one WHIP request is one trace — the HTTP
//! request, the use case, the aggregate's append, the request to the node
//! (over NATS, its context in the message headers) and the node's handling
//! of it, in two processes. The answer names the trace (`Arc-Trace-Id`), and
//! the events the request appended carry it as their correlation id (and
//! its `traceparent`): the projections' batches link to the trace and its
//! webhook deliveries are spans in it. The
//! collector is an in-process OTLP/HTTP receiver (protobuf), over http and,
//! trusted through `ARC_OTLP_CA_FILE`, over https.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use common::{ADMIN_KEY, admin_get, create_app_with, mint_token, receiver, start_media_with_env, start_with_env};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::{Value, json};

/// A span as the collector received it.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    /// Trace ids of the spans it links to.
    links: Vec<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP receiver on loopback: its base URL and what it received.
async fn collector() -> (String, Arc<Mutex<Vec<Got>>>) {
    let (app, got) = collector_app();
    (common::serve_local(app).await, got)
}

/// An `axum::serve` listener that terminates TLS (failed handshakes are skipped).
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else { continue };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// The receiver behind TLS with a fresh self-signed certificate for
/// `localhost`: its base URL, what it received, the certificate's PEM.
async fn tls_collector() -> (String, Arc<Mutex<Vec<Got>>>, String) {
    let (app, got) = collector_app();
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let cert_pem = key.cert.pem();
    let private = rustls::pki_types::PrivateKeyDer::try_from(key.signing_key.serialize_der()).expect("key der");
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(vec![key.cert.der().clone()], private)
        .expect("server config");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = tcp.local_addr().expect("addr").port();
    let listener = TlsListener { tcp, acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)) };
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("https://localhost:{port}"), got, cert_pem)
}

fn collector_app() -> (axum::Router, Arc<Mutex<Vec<Got>>>) {
    let got: Arc<Mutex<Vec<Got>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
                let mut spans = sink.lock().expect("lock");
                for rs in req.resource_spans {
                    let service = rs
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .and_then(|a| match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                            Some(AnyValue::StringValue(s)) => Some(s.clone()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    for ss in rs.scope_spans {
                        for s in ss.spans {
                            spans.push(Got {
                                service: service.clone(),
                                name: s.name,
                                trace_id: hex(&s.trace_id),
                                span_id: hex(&s.span_id),
                                parent: hex(&s.parent_span_id),
                                links: s.links.iter().map(|l| hex(&l.trace_id)).collect(),
                            });
                        }
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse { partial_success: None }.encode_to_vec(),
                )
            }
        }),
    );
    (app, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_whip_request_is_one_trace_across_control_and_node() {
    let (otlp, spans) = collector().await;
    let otel = [("ARC_OTLP_ENDPOINT", otlp.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let (nats, stream, prefix, _dir, mode) = common::cluster("TRC", "trc").await;
    let server = start_with_env(&mode, &[], &otel);
    let base = server.base.clone();
    let _node = start_media_with_env(&nats, &stream, &prefix, "traced-node", &otel);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let nodes = admin_get(&base, "/v1/nodes").await;
        if nodes["nodes"].as_array().is_some_and(|n| n.iter().any(|x| x["state"] == "up")) {
            break;
        }
        assert!(Instant::now() < deadline, "the node registered within 30 s: {nodes}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (hook_url, hooks) = receiver().await;
    let app = create_app_with(&base, ADMIN_KEY, json!({"name": "traces", "webhooks": [hook_url]})).await;
    let token = mint_token(&base, &app, "cam", "traced", json!({"publish": true})).await;
    let offer = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../dataplane/tests/fixtures/sdp/webrtcbin-publish-balanced.sdp"),
    )
    .expect("a recorded offer");
    let resp = http
        .post(format!("{base}/v1/whip/traced"))
        .bearer_auth(&token)
        .header("content-type", "application/sdp")
        .body(offer)
        .send()
        .await
        .expect("whip");
    assert_eq!(resp.status(), 201, "{:?}", resp.text().await);
    let trace_id = resp
        .headers()
        .get("arc-trace-id")
        .and_then(|v| v.to_str().ok())
        .expect("Arc-Trace-Id on the answer")
        .to_owned();
    assert_eq!(trace_id.len(), 32, "{trace_id}");

    // Both processes export the trace's spans (batches every 100 ms).
    let want =
        ["POST /v1/whip/{room}", "usecase.open_media_session", "execute", "node.place", "node.request", "node.serve"];
    let deadline = Instant::now() + Duration::from_secs(20);
    let trace: Vec<Got> = loop {
        let trace: Vec<Got> = spans.lock().expect("lock").iter().filter(|s| s.trace_id == trace_id).cloned().collect();
        if want.iter().all(|w| trace.iter().any(|s| s.name == *w)) {
            break trace;
        }
        assert!(Instant::now() < deadline, "the trace's spans within 20 s; have {trace:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let by_name: HashMap<&str, &Got> = trace.iter().map(|s| (s.name.as_str(), s)).collect();
    let root = by_name["POST /v1/whip/{room}"];
    assert_eq!(root.service, "arc-control");
    assert!(root.parent.is_empty() || root.parent.chars().all(|c| c == '0'), "the request is the root: {root:?}");
    assert_eq!(by_name["usecase.open_media_session"].parent, root.span_id, "{trace:#?}");
    let request = by_name["node.request"];
    assert_eq!(request.service, "arc-control");
    let serve = by_name["node.serve"];
    assert_eq!(serve.service, "arc-media", "the node's span comes from arc-media");
    assert_eq!(serve.parent, request.span_id, "the node's span is the request's child: {trace:#?}");
    assert!(trace.iter().filter(|s| s.name == "execute").all(|s| s.service == "arc-control"));

    // The events the request appended carry the trace id as their correlation id.
    let events = admin_get(&base, "/v1/events?tail=50").await;
    let correlated: Vec<&Value> = events["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["correlation_id"].as_str().is_some_and(|c| c.replace('-', "") == trace_id))
        .collect();
    assert!(
        correlated.iter().any(|e| e["type"] == "room.participant_joined"),
        "the join appended under the trace: {events}"
    );

    // What the request's events caused later leads back to it: the
    // projections' batches link to the trace, and each webhook delivery of
    // its events is a span in the trace itself (its parent the span that
    // appended the event).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = spans.lock().expect("lock").clone();
        let linked: Vec<&Got> =
            got.iter().filter(|s| s.name == "projection.apply" && s.links.contains(&trace_id)).collect();
        let delivered: Vec<&Got> =
            got.iter().filter(|s| s.name == "webhook.deliver" && s.trace_id == trace_id).collect();
        if !linked.is_empty() && !delivered.is_empty() {
            let in_trace: Vec<&str> =
                got.iter().filter(|s| s.trace_id == trace_id).map(|s| s.span_id.as_str()).collect();
            for d in &delivered {
                assert_eq!(d.service, "arc-control");
                assert!(in_trace.contains(&d.parent.as_str()), "a delivery's parent is in the trace: {d:?}");
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "projection batches linked ({}) and deliveries in the trace ({}) within 20 s; {} webhooks arrived",
            linked.len(),
            delivered.len(),
            hooks.lock().expect("lock").len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An https collector: its certificate is verified against the system's
/// roots plus `ARC_OTLP_CA_FILE`; with that file naming its CA, spans
/// arrive; a CA file that holds no certificate stops the start with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_reach_an_https_collector_trusted_through_the_ca_file() {
    let (otlp, spans, ca_pem) = tls_collector().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("otlp-ca.pem");
    std::fs::write(&ca, &ca_pem).expect("write the CA");
    let ca = ca.display().to_string();
    let otel =
        [("ARC_OTLP_ENDPOINT", otlp.as_str()), ("ARC_OTLP_CA_FILE", ca.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let mode = common::Mode::Embedded { data_dir: dir.path().join("data") };
    let server = start_with_env(&mode, &[], &otel);
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/apps", server.base))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("a request");
    assert_eq!(resp.status(), 200);
    let trace_id = resp.headers().get("arc-trace-id").and_then(|v| v.to_str().ok()).expect("a trace").to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !spans.lock().expect("lock").iter().any(|s| s.trace_id == trace_id && s.service == "arc-control") {
        assert!(Instant::now() < deadline, "the request's span over https within 20 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(server);

    let bad = dir.path().join("not-a-ca.pem");
    std::fs::write(&bad, "not a certificate").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_arc-control"))
        .arg("dev")
        .args(mode.args(None))
        .env("ARC_OTLP_ENDPOINT", &otlp)
        .env("ARC_OTLP_CA_FILE", &bad)
        .output()
        .expect("run arc-control");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a CA file without a certificate is refused");
    assert!(stderr.contains("ARC_OTLP_CA_FILE") && stderr.contains("no PEM certificate"), "{stderr}");
}
