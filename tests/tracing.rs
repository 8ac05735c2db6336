//! One trace per command across every hop, exported by the real binaries over OTLP to a
//! collector of the test's own (configured only by the standard `OTEL_*` variables), with
//! the spans of the OpenTelemetry conventions: the ingress's HTTP server span continues the
//! caller's `traceparent`; its producer span `publish switchyard.commands` is what the AMQP
//! header names; the worker's consumer span `process switchyard.commands` continues it; the
//! provider call is its child and each HTTP request a client span below that, whose
//! `traceparent` the provider receives; the events carry the trace, and the JSON logs carry
//! the command and trace ids.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use switchyard_core::Status;
use switchyard_e2e::binary;
use switchyard_testing::{TOKEN, TestFleet, TestFleetOptions, free_port};
use tokio::process::{Child, Command};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A span as the collector received it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    /// The OTLP span kind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    kind: i32,
    trace_id: String,
    span_id: String,
    parent: String,
    /// String and integer attributes, as text.
    attributes: HashMap<String, String>,
}

impl Received {
    fn attr(&self, key: &str) -> &str {
        self.attributes
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{} has no {key}: {self:#?}", self.name))
    }
}

const INTERNAL: i32 = 1;
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

type Spans = Arc<Mutex<Vec<Received>>>;

/// An OTLP/HTTP (protobuf) trace receiver on a free port.
async fn collector() -> (u16, Spans) {
    let spans: Spans = Arc::default();
    let store = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let store = store.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).unwrap();
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .and_then(|a| a.value.as_ref())
                        .map(|v| format!("{:?}", v.value))
                        .unwrap_or_default();
                    for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                        use opentelemetry_proto::tonic::common::v1::any_value::Value;
                        let attributes = span
                            .attributes
                            .iter()
                            .filter_map(|a| {
                                let value = match a.value.as_ref()?.value.as_ref()? {
                                    Value::StringValue(s) => s.clone(),
                                    Value::IntValue(i) => i.to_string(),
                                    _ => return None,
                                };
                                Some((a.key.clone(), value))
                            })
                            .collect();
                        store.lock().unwrap().push(Received {
                            service: service.clone(),
                            name: span.name,
                            kind: span.kind,
                            trace_id: hex::encode(span.trace_id),
                            span_id: hex::encode(span.span_id),
                            parent: hex::encode(span.parent_span_id),
                            attributes,
                        });
                    }
                }
                // An empty ExportTraceServiceResponse.
                (
                    [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, spans)
}

fn spawn(bin: &str, config: &std::path::Path, log: &std::path::Path, otlp: u16) -> Child {
    Command::new(binary(bin))
        .arg("--config")
        .arg(config)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{otlp}"),
        )
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("RUST_LOG", "info,switchyard_worker=debug,lapin=warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn one_trace_from_the_caller_through_the_broker_the_worker_and_the_provider() {
    let fleet = TestFleet::start_with(TestFleetOptions {
        in_process: false,
        ..Default::default()
    })
    .await;
    let (otlp, spans) = collector().await;
    let dir = std::env::temp_dir().join(format!(
        "switchyard-trace-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("switchyard.toml");
    let toml = fleet.config_toml.replacen(
        "[ledger]\nlisten = \"127.0.0.1:0\"",
        &format!("[ledger]\nlisten = \"127.0.0.1:{}\"", free_port()),
        1,
    );
    std::fs::write(&config, toml).unwrap();
    let logs = [dir.join("ingress.log"), dir.join("payment.log")];
    let mut ingress = spawn("switchyard-ingress", &config, &logs[0], otlp);
    let mut worker = spawn("switchyard-payment", &config, &logs[1], otlp);

    let base = format!("http://127.0.0.1:{}", fleet.ingress_port);
    let http = fleet.http().clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "the ingress never became ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    while fleet
        .vhost
        .queue_messages("switchyard.work.payment.sandbox")
        .await
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "the worker never declared its queue"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let r = http
        .post(format!("{base}/v1/commands"))
        .bearer_auth(TOKEN)
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .json(
            &serde_json::json!({"kind": "payment", "provider": "sandbox", "operation": "charge",
            "payload": {"amount": 1999, "currency": "usd", "payment_method": "pm_card_visa"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id: uuid::Uuid = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let events = fleet.events.terminal(id, Duration::from_secs(30)).await;
    assert_eq!(events.last().unwrap().status, Status::Completed);

    // The events (pending from the ingress; processing and completed from the worker).
    let tps = fleet.events.traceparents(id);
    assert_eq!(tps.len(), events.len());
    for tp in &tps {
        let tp = tp.as_deref().unwrap_or_default();
        assert!(
            tp.starts_with(&format!("00-{TRACE_ID}-")),
            "event traceparent {tp:?}"
        );
    }
    // The provider.
    let view = fleet.sandbox_view(id).await;
    let sent = view["requests"][0]["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(sent.starts_with(&format!("00-{TRACE_ID}-")), "{view:#}");

    // The spans, exported by both processes.
    let deadline = Instant::now() + Duration::from_secs(20);
    let by_name = loop {
        let found: HashMap<String, Received> = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == TRACE_ID)
            .map(|s| (s.name.clone(), s.clone()))
            .collect();
        if [
            "POST /v1/commands",
            "publish switchyard.commands",
            "process switchyard.commands",
            "call provider",
            "POST",
        ]
        .iter()
        .all(|n| found.contains_key(*n))
        {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "spans of the trace: {found:#?}\nall: {:#?}",
            spans.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let accept = &by_name["POST /v1/commands"];
    let publish = &by_name["publish switchyard.commands"];
    let process = &by_name["process switchyard.commands"];
    let call = &by_name["call provider"];
    let http_call = &by_name["POST"];
    assert!(accept.service.contains("switchyard-ingress"), "{accept:?}");
    assert!(
        publish.service.contains("switchyard-ingress"),
        "{publish:?}"
    );
    assert!(
        process.service.contains("switchyard-payment"),
        "{process:?}"
    );
    assert!(
        http_call.service.contains("switchyard-payment"),
        "{http_call:?}"
    );
    assert_eq!(
        [
            accept.kind,
            publish.kind,
            process.kind,
            call.kind,
            http_call.kind
        ],
        [SERVER, PRODUCER, CONSUMER, INTERNAL, CLIENT]
    );
    assert_eq!(
        accept.parent, CALLER_SPAN,
        "the ingress continues the caller's span"
    );
    assert_eq!(
        publish.parent, accept.span_id,
        "the publish is the request's child"
    );
    assert_eq!(
        process.parent, publish.span_id,
        "the worker continues the ingress's publish span, named by the AMQP header"
    );
    assert_eq!(
        call.parent, process.span_id,
        "the call is the delivery's child"
    );
    assert_eq!(
        http_call.parent, call.span_id,
        "each request is the call's child"
    );
    assert_eq!(
        sent.split('-').nth(2).unwrap(),
        http_call.span_id,
        "the provider's parent is the request's span"
    );

    // HTTP server and client attributes.
    assert_eq!(accept.attr("http.request.method"), "POST");
    assert_eq!(accept.attr("http.route"), "/v1/commands");
    assert_eq!(accept.attr("http.response.status_code"), "202");
    assert_eq!(accept.attr("command_id"), id.to_string());
    assert_eq!(http_call.attr("http.request.method"), "POST");
    assert!(!http_call.attr("server.address").is_empty());
    assert!(http_call.attr("server.port").parse::<u16>().is_ok());
    assert!(
        http_call.attr("url.full").starts_with("https://"),
        "{http_call:#?}"
    );
    assert!(
        http_call.attr("http.response.status_code").starts_with('2'),
        "{http_call:#?}"
    );
    assert!(!http_call.attributes.contains_key("error.type"));

    // Messaging attributes, on both sides of the broker.
    for span in [publish, process] {
        assert_eq!(span.attr("messaging.system"), "rabbitmq");
        assert_eq!(
            span.attr("messaging.destination.name"),
            "switchyard.commands"
        );
        assert_eq!(
            span.attr("messaging.rabbitmq.destination.routing_key"),
            "payment.sandbox.charge"
        );
        assert_eq!(span.attr("messaging.message.id"), id.to_string());
    }
    assert_eq!(publish.attr("messaging.operation.type"), "send");
    assert_eq!(process.attr("messaging.operation.type"), "process");
    // The events the worker published are producer spans of the same trace.
    let events_published: Vec<Received> = spans
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.trace_id == TRACE_ID && s.name == "publish switchyard.events")
        .cloned()
        .collect();
    assert!(
        events_published
            .iter()
            .any(|s| s.service.contains("switchyard-payment") && s.kind == PRODUCER),
        "{events_published:#?}"
    );

    // The worker's JSON logs carry both ids.
    let _ = worker.kill().await;
    let _ = ingress.kill().await;
    let log = std::fs::read_to_string(&logs[1]).unwrap();
    let tagged = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|l| {
            let text = l.to_string();
            text.contains(&id.to_string()) && text.contains(TRACE_ID)
        });
    assert!(
        tagged,
        "no JSON log line with the command and trace ids:\n{log}"
    );
    fleet.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
