//! The client against a real local HTTPS server: a throwaway CA (rcgen), a leaf for
//! `localhost` and `127.0.0.1`, axum behind rustls on a random port.

// clippy.toml allows unwrap in #[test] functions only; the harness helpers below should
// panic just as loudly when setup fails.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum_server::tls_rustls::RustlsConfig;
use bytes::Bytes;
use http::Method;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use switchyard_core::ErrorClass;
use switchyard_http::{
    BuildError, OutboundClient, OutboundRequest, OutboundSettings, install_crypto_provider,
};
use tempfile::TempDir;

/// A running server and the CA that signed its certificate.
struct Server {
    port: u16,
    ca_file: PathBuf,
    _dir: TempDir,
}

impl Server {
    fn url(&self, host: &str, path: &str) -> url::Url {
        url::Url::parse(&format!("https://{host}:{}{path}", self.port)).unwrap()
    }

    /// Settings trusting the test CA, loopback allowed.
    fn settings(&self) -> OutboundSettings {
        OutboundSettings {
            allow_loopback: true,
            ca_files: vec![self.ca_file.clone()],
            ..OutboundSettings::default()
        }
    }

    fn client(&self) -> OutboundClient {
        OutboundClient::new(&self.settings()).unwrap()
    }
}

const BIG: usize = 2 * 1024 * 1024;

/// Requests `/held` is answering now, and the most it ever answered at once (one test uses it).
static HELD: AtomicUsize = AtomicUsize::new(0);
static MOST_HELD: AtomicUsize = AtomicUsize::new(0);

fn app() -> Router {
    Router::new()
        .route("/ok", get(|| async { "hello" }))
        .route(
            "/echo",
            post(|headers: HeaderMap, body: Bytes| async move {
                let key = headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                (StatusCode::CREATED, [("x-seen-key", key)], body)
            }),
        )
        .route(
            "/busy",
            get(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "7")],
                    "try again later",
                )
            }),
        )
        .route(
            "/redirect",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/ok")], "") }),
        )
        .route(
            "/hang",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                "too late"
            }),
        )
        .route(
            "/trace",
            get(|headers: HeaderMap| async move {
                headers
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none")
                    .to_owned()
            }),
        )
        .route("/big", get(|| async { vec![b'a'; BIG] }))
        .route(
            "/big-stream",
            get(|| async {
                let chunks =
                    (0..64).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'b'; 32 * 1024])));
                Body::from_stream(futures::stream::iter(chunks)).into_response()
            }),
        )
        .route(
            "/version",
            get(
                |request: axum::extract::Request| async move { format!("{:?}", request.version()) },
            ),
        )
        .route(
            "/held",
            get(|| async {
                let now = HELD.fetch_add(1, Ordering::SeqCst) + 1;
                MOST_HELD.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                HELD.fetch_sub(1, Ordering::SeqCst);
                "held"
            }),
        )
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        )
}

async fn start() -> Server {
    start_with(|_| {}).await
}

/// [`start`], with the server's HTTP settings adjusted first.
async fn start_with(
    tune: impl FnOnce(&mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>),
) -> Server {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Switchyard test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf_cert.der().clone()], key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut server =
        axum_server::from_tcp_rustls(listener, RustlsConfig::from_config(Arc::new(config)))
            .unwrap();
    tune(server.http_builder());
    tokio::spawn(server.serve(app().into_make_service_with_connect_info::<SocketAddr>()));

    Server {
        port,
        ca_file,
        _dir: dir,
    }
}

fn get_req(url: url::Url) -> OutboundRequest {
    OutboundRequest::new(Method::GET, url)
}

#[tokio::test]
async fn ok_with_body() {
    let server = start().await;
    let exchange = server
        .client()
        .send(get_req(server.url("localhost", "/ok")))
        .await
        .unwrap();
    assert_eq!(exchange.status, StatusCode::OK);
    assert_eq!(&exchange.body[..], b"hello");
    assert!(exchange.duration > Duration::ZERO);
    assert!(exchange.classify().is_ok());
}

#[tokio::test]
async fn post_sends_body_and_headers() {
    let server = start().await;
    let mut request = OutboundRequest::new(Method::POST, server.url("localhost", "/echo"));
    request
        .headers
        .insert("idempotency-key", "0b7c-key".parse().unwrap());
    request.body = Bytes::from_static(br#"{"amount":1000}"#);
    let exchange = server.client().send(request).await.unwrap();
    assert_eq!(exchange.status, StatusCode::CREATED);
    assert_eq!(&exchange.body[..], br#"{"amount":1000}"#);
    assert_eq!(exchange.headers["x-seen-key"], "0b7c-key");
}

#[tokio::test]
async fn unavailable_is_transient_with_retry_after() {
    let server = start().await;
    let exchange = server
        .client()
        .send(get_req(server.url("localhost", "/busy")))
        .await
        .unwrap();
    assert_eq!(exchange.status, StatusCode::SERVICE_UNAVAILABLE);
    let err = exchange.classify().unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient);
    assert_eq!(err.code, "http_503");
    assert_eq!(err.http_status, Some(503));
    assert_eq!(err.retry_after, Some(Duration::from_secs(7)));
    assert_eq!(
        err.message,
        "provider answered 503 Service Unavailable: try again later"
    );
}

#[tokio::test]
async fn redirect_is_not_followed() {
    let server = start().await;
    let exchange = server
        .client()
        .send(get_req(server.url("localhost", "/redirect")))
        .await
        .unwrap();
    assert_eq!(exchange.status, StatusCode::FOUND);
    assert_eq!(exchange.headers[header::LOCATION], "/ok");
    let err = exchange.classify().unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert_eq!(err.code, "http_302");
}

#[tokio::test]
async fn hanging_provider_times_out_on_time() {
    let server = start().await;
    let client = server.client();

    // The per-request override.
    let mut request = get_req(server.url("localhost", "/hang"));
    request.timeout = Some(Duration::from_millis(500));
    let started = Instant::now();
    let err = client.send(request).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.class, ErrorClass::Timeout, "{err}");
    assert_eq!(err.code, "timeout");
    assert!(took >= Duration::from_millis(450), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");

    // The settings' timeout.
    let client = OutboundClient::new(&OutboundSettings {
        timeout: Duration::from_millis(300),
        ..server.settings()
    })
    .unwrap();
    let started = Instant::now();
    let err = client
        .send(get_req(server.url("localhost", "/hang")))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Timeout, "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// The body is never read past the cap. After a 2xx the provider acted, so the outcome is
/// `unknown` (contract 7), never a plain permanent failure.
#[tokio::test]
async fn oversized_body_is_refused() {
    let server = start().await;
    let client = OutboundClient::new(&OutboundSettings {
        max_response_bytes: 64 * 1024,
        ..server.settings()
    })
    .unwrap();
    for path in ["/big", "/big-stream"] {
        let err = client
            .send(get_req(server.url("localhost", path)))
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Unknown, "{path}: {err}");
        assert_eq!(err.code, "response_too_large", "{path}");
        assert_eq!(err.http_status, Some(200), "{path}");
    }
    // The default cap (1 MiB) is below 2 MiB too, and a body under the cap passes.
    let err = server
        .client()
        .send(get_req(server.url("localhost", "/big")))
        .await
        .unwrap_err();
    assert_eq!(err.code, "response_too_large");
    let roomy = OutboundClient::new(&OutboundSettings {
        max_response_bytes: BIG,
        ..server.settings()
    })
    .unwrap();
    let exchange = roomy
        .send(get_req(server.url("localhost", "/big-stream")))
        .await
        .unwrap();
    assert_eq!(exchange.body.len(), BIG);
}

#[tokio::test]
async fn loopback_is_refused_unless_allowed() {
    let server = start().await;
    let strict = OutboundClient::new(&OutboundSettings {
        allow_loopback: false,
        ..server.settings()
    })
    .unwrap();
    for host in ["localhost", "127.0.0.1", "[::1]"] {
        let err = strict
            .send(get_req(server.url(host, "/ok")))
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Permanent, "{host}: {err}");
        assert_eq!(err.code, "destination_refused", "{host}: {err}");
        assert!(err.message.contains("not allowed"), "{host}: {err}");
    }

    // allow_private alone does not open loopback.
    let private_only = OutboundClient::new(&OutboundSettings {
        allow_loopback: false,
        allow_private: true,
        ..server.settings()
    })
    .unwrap();
    let err = private_only
        .send(get_req(server.url("localhost", "/ok")))
        .await
        .unwrap_err();
    assert_eq!(err.code, "destination_refused");

    let allowed = server.client();
    for host in ["localhost", "127.0.0.1"] {
        let exchange = allowed
            .send(get_req(server.url(host, "/ok")))
            .await
            .unwrap();
        assert_eq!(exchange.status, StatusCode::OK, "{host}");
    }
}

#[tokio::test]
async fn private_literal_is_refused_before_connecting() {
    let client = OutboundClient::new(&OutboundSettings::default()).unwrap();
    for url in [
        "https://10.0.0.1/",
        "https://169.254.169.254/latest/meta-data/",
        "https://[fd00::1]/",
        "https://100.64.0.1/",
        "https://0.0.0.0/",
    ] {
        let err = client
            .send(get_req(url.parse().unwrap()))
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Permanent, "{url}: {err}");
        assert_eq!(err.code, "destination_refused", "{url}: {err}");
    }
}

#[tokio::test]
async fn plain_http_is_refused() {
    let client = OutboundClient::new(&OutboundSettings::default()).unwrap();
    let err = client
        .send(get_req("http://pay.acme.example/".parse().unwrap()))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert_eq!(err.code, "destination_refused");
}

#[tokio::test]
async fn unknown_ca_fails_verification() {
    let server = start().await;
    let client = OutboundClient::new(&OutboundSettings {
        ca_files: Vec::new(),
        ..server.settings()
    })
    .unwrap();
    let err = client
        .send(get_req(server.url("localhost", "/ok")))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient, "{err}");
    assert_eq!(err.code, "connect", "{err}");
    assert!(err.message.to_lowercase().contains("certificate"), "{err}");
}

#[tokio::test]
async fn connections_are_reused() {
    let server = start().await;
    let client = server.client();
    let first = client
        .send(get_req(server.url("localhost", "/peer")))
        .await
        .unwrap();
    let second = client
        .clone()
        .send(get_req(server.url("localhost", "/peer")))
        .await
        .unwrap();
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(second.status, StatusCode::OK);
    // The server saw both requests come from the same client port: one connection.
    assert_eq!(first.body, second.body);
}

/// A worker's `concurrency` is the number of calls that reach the provider at once. Over one
/// HTTP/2 connection, calls beyond the server's stream limit would wait inside the client, on
/// the attempt's clock and unseen by the worker's own limit; each call has its own HTTP/1.1
/// connection instead.
#[tokio::test]
async fn concurrent_calls_reach_the_provider_at_once_whatever_its_stream_limit() {
    let server = start_with(|http| {
        http.http2().max_concurrent_streams(2);
    })
    .await;
    let client = server.client();
    let calls = (0..6).map(|_| {
        let client = client.clone();
        let url = server.url("localhost", "/held");
        async move { client.send(get_req(url)).await }
    });
    for answer in futures::future::join_all(calls).await {
        assert_eq!(answer.unwrap().status, StatusCode::OK);
    }
    assert_eq!(
        MOST_HELD.load(Ordering::SeqCst),
        6,
        "the provider should have seen all six calls at once"
    );
}

#[tokio::test]
async fn http2_is_used_only_when_enabled() {
    let server = start().await;
    let version = |settings: OutboundSettings| {
        let url = server.url("localhost", "/version");
        async move {
            let client = OutboundClient::new(&settings).unwrap();
            let answer = client.send(get_req(url)).await.unwrap();
            String::from_utf8(answer.body.to_vec()).unwrap()
        }
    };
    assert_eq!(version(server.settings()).await, "HTTP/1.1");
    let h2 = OutboundSettings {
        http2: true,
        ..server.settings()
    };
    assert_eq!(version(h2).await, "HTTP/2.0");
}

#[test]
fn ca_file_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let err = OutboundClient::new(&OutboundSettings {
        ca_files: vec![missing.clone()],
        ..OutboundSettings::default()
    })
    .unwrap_err();
    assert!(matches!(err, BuildError::ReadCaFile { .. }), "{err}");
    assert!(err.to_string().contains("missing.pem"), "{err}");

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificate in here\n").unwrap();
    let err = OutboundClient::new(&OutboundSettings {
        ca_files: vec![empty],
        ..OutboundSettings::default()
    })
    .unwrap_err();
    assert!(matches!(err, BuildError::NoCertificate { .. }), "{err}");
    assert!(err.to_string().contains("empty.pem"), "{err}");
}

#[test]
fn crypto_provider_install_is_idempotent() {
    install_crypto_provider();
    install_crypto_provider();
    assert!(rustls::crypto::CryptoProvider::get_default().is_some());
}

#[test]
fn debug_output_hides_credentials() {
    let mut request = get_req("https://pay.acme.example/charge".parse().unwrap());
    request
        .headers
        .insert("authorization", "Bearer sk_live_canary".parse().unwrap());
    request.body = Bytes::from_static(b"4242424242424242");
    let shown = format!("{request:?}");
    assert!(!shown.contains("canary"), "{shown}");
    assert!(!shown.contains("4242424242424242"), "{shown}");
}

/// mTLS: a provider that requires a client certificate refuses a client without one and
/// serves one that presents a certificate its CA signed.
#[tokio::test]
async fn a_client_certificate_is_presented_when_configured() {
    install_crypto_provider();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Switchyard mTLS test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "switchyard-worker");
    let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let (cert_file, key_file) = (dir.path().join("client.pem"), dir.path().join("client.key"));
    std::fs::write(&cert_file, client_cert.pem()).unwrap();
    std::fs::write(&key_file, client_key.serialize_pem()).unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server_cert.der().clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server =
        axum_server::from_tcp_rustls(listener, RustlsConfig::from_config(Arc::new(config)))
            .unwrap();
    tokio::spawn(server.serve(app().into_make_service_with_connect_info::<SocketAddr>()));
    let url = url::Url::parse(&format!("https://localhost:{port}/ok")).unwrap();

    let mut settings = OutboundSettings {
        allow_loopback: true,
        ca_files: vec![ca_file],
        ..OutboundSettings::default()
    };
    let refused = OutboundClient::new(&settings)
        .unwrap()
        .send(get_req(url.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(refused.class, ErrorClass::Transient | ErrorClass::Timeout),
        "{refused:?}"
    );
    settings.client_identity = Some(switchyard_http::ClientIdentity {
        cert_file,
        key_file: key_file.clone(),
    });
    let exchange = OutboundClient::new(&settings)
        .unwrap()
        .send(get_req(url))
        .await
        .unwrap();
    assert_eq!(exchange.status, StatusCode::OK);

    // A key that is not a key is refused when the client is built, naming the file.
    std::fs::write(&key_file, "not a key").unwrap();
    match OutboundClient::new(&settings) {
        Err(BuildError::ClientIdentity { path, .. }) => assert_eq!(path, key_file),
        other => panic!("{other:?}"),
    }
}

/// Each request is an HTTP client span (OpenTelemetry HTTP conventions) whose context is the
/// `traceparent` the provider receives; its URL is the redacted one.
#[tokio::test]
async fn each_request_is_an_http_client_span_whose_context_the_provider_receives() {
    let server = start().await;
    let client = server.client();
    let (subscriber, captured) = switchyard_telemetry::testing::capture();
    let guard = tracing::subscriber::set_default(subscriber);
    let mut url = server.url("localhost", "/trace");
    url.set_query(Some("api_key=sk_canary_query"));
    url.set_username("user_canary").unwrap();
    url.set_password(Some("pw_canary")).unwrap();
    let traced = client.send(get_req(url)).await.unwrap();
    let busy = client
        .send(get_req(server.url("localhost", "/busy")))
        .await
        .unwrap();
    let refused = client
        .send(get_req(url::Url::parse("http://localhost/plain").unwrap()))
        .await
        .unwrap_err();
    // Recorded: the attempt record shows the traceparent that was sent.
    let call = switchyard_core::ProviderCall {
        command: Arc::new(switchyard_core::Command::shell(
            uuid::Uuid::now_v7(),
            "payment.stripe.charge".parse().unwrap(),
            chrono::Utc::now(),
        )),
        attempt: 1,
        idempotency_key: uuid::Uuid::nil(),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        recorder: Default::default(),
    };
    let recorded = client
        .send_recorded(
            get_req(server.url("localhost", "/trace")),
            &call,
            &switchyard_http::Redactor::default(),
        )
        .await
        .unwrap();
    drop(guard);
    captured.flush();
    let spans = captured.spans();
    assert_eq!(spans.len(), 4, "{spans:#?}");

    let ok = &spans[0];
    assert_eq!((ok.name.as_str(), ok.kind), ("GET", "client"));
    assert_eq!(ok.str("http.request.method"), Some("GET"));
    assert_eq!(ok.str("server.address"), Some("localhost"));
    assert_eq!(ok.int("server.port"), Some(i64::from(server.port)));
    assert_eq!(
        ok.str("url.full").unwrap(),
        format!("https://localhost:{}/trace?[REDACTED]", server.port)
    );
    assert_eq!(ok.int("http.response.status_code"), Some(200));
    assert_eq!(ok.str("error.type"), None);
    assert!(!ok.error);
    assert_eq!(
        String::from_utf8(traced.body.to_vec()).unwrap(),
        format!("00-{}-{}-01", ok.trace_id, ok.span_id),
        "the provider's parent is the request's span"
    );
    let text = format!("{spans:?}");
    for canary in ["sk_canary_query", "user_canary", "pw_canary"] {
        assert!(!text.contains(canary), "{canary} in a span: {text}");
    }

    let busy_span = &spans[1];
    assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(busy_span.int("http.response.status_code"), Some(503));
    assert_eq!(busy_span.str("error.type"), Some("503"));
    assert!(busy_span.error);

    let refused_span = &spans[2];
    assert_eq!(refused_span.int("server.port"), Some(80));
    assert_eq!(refused_span.int("http.response.status_code"), None);
    assert_eq!(refused_span.str("error.type"), Some(refused.code.as_str()));
    assert!(refused_span.error);

    let recorded_span = &spans[3];
    let sent = String::from_utf8(recorded.body.to_vec()).unwrap();
    assert_eq!(
        sent,
        format!("00-{}-{}-01", recorded_span.trace_id, recorded_span.span_id)
    );
    let records = call.recorder.take();
    assert_eq!(
        records[0]
            .request_headers
            .get("traceparent")
            .map(String::as_str),
        Some(sent.as_str())
    );
}
