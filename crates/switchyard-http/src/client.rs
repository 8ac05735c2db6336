//! The outbound client: one reqwest client per process, wrapped so that every call runs
//! under the policy of S1-S3 and every failure comes back already classified.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, StatusCode};
use reqwest::redirect::Policy;
use switchyard_core::ProviderError;
use url::{Host, Url};

use crate::classify::{classify, destination_refused, timeout_error, too_large, transport_error};
use crate::resolver::{AddressPolicy, DestinationRefused, GuardedResolver};
use crate::settings::OutboundSettings;
use crate::tls;
use switchyard_redact::redact_headers;
use tracing::Instrument as _;

/// Why the client could not be built. Start-up fails with this, naming the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A CA file could not be read.
    #[error("cannot read CA file {}: {source}", path.display())]
    ReadCaFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A CA file holds no PEM `CERTIFICATE` block.
    #[error("CA file {} holds no PEM certificate", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A CA file holds a certificate that cannot be a trust root.
    #[error("CA file {} holds an unusable certificate: {reason}", path.display())]
    InvalidCertificate {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// The client certificate or its key cannot be used.
    #[error("client certificate {}: {reason}", path.display())]
    ClientIdentity {
        /// The file at fault.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    /// reqwest refused the configuration.
    #[error("HTTP client could not be built: {0}")]
    Client(#[source] reqwest::Error),
}

/// One outbound request. Headers may carry credentials: `Debug` redacts them.
#[derive(Clone)]
pub struct OutboundRequest {
    /// The method.
    pub method: Method,
    /// The full URL; must be `https://`.
    pub url: Url,
    /// Request headers, credentials included.
    pub headers: HeaderMap,
    /// The body; empty sends none.
    pub body: Bytes,
    /// Overrides [`OutboundSettings::timeout`] for this attempt.
    pub timeout: Option<Duration>,
}

impl OutboundRequest {
    /// A request without headers, body or timeout override.
    pub fn new(method: Method, url: Url) -> Self {
        Self {
            method,
            url,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            timeout: None,
        }
    }

    /// A `POST` of a JSON `body` with `headers` (its content type set here).
    pub fn post_json(url: Url, mut headers: HeaderMap, body: Bytes) -> Self {
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Self {
            method: Method::POST,
            url,
            headers,
            body,
            timeout: None,
        }
    }
}

impl fmt::Debug for OutboundRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundRequest")
            .field("method", &self.method)
            .field("host", &self.url.host_str())
            .field("path", &self.url.path())
            .field("headers", &redact_headers(&self.headers))
            .field("body_len", &self.body.len())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What happened on the wire, for the attempt record (redacted) and for classification.
#[derive(Clone)]
pub struct HttpExchange {
    /// The provider's status; redirects are returned, never followed.
    pub status: StatusCode,
    /// Response headers, unredacted: use [`redact_headers`] before recording them.
    pub headers: HeaderMap,
    /// The response body, at most `max_response_bytes`.
    pub body: Bytes,
    /// From sending the request to the last body byte.
    pub duration: Duration,
}

impl HttpExchange {
    /// [`classify`] applied to this answer.
    pub fn classify(&self) -> Result<(), ProviderError> {
        classify(self.status, &self.headers, &self.body)
    }
}

impl fmt::Debug for HttpExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpExchange")
            .field("status", &self.status)
            .field("headers", &redact_headers(&self.headers))
            .field("body_len", &self.body.len())
            .field("duration", &self.duration)
            .finish()
    }
}

/// The one way Switchyard calls providers. Cheap to clone: clones share the connection pool.
#[derive(Debug, Clone)]
pub struct OutboundClient {
    http: reqwest::Client,
    policy: AddressPolicy,
    timeout: Duration,
    max_response_bytes: usize,
}

impl OutboundClient {
    /// Builds the client: verified TLS with webpki roots plus `ca_files`, https only, no
    /// redirects, no proxy from the environment, and the destination policy on DNS answers.
    pub fn new(settings: &OutboundSettings) -> Result<Self, BuildError> {
        let policy = AddressPolicy {
            allow_loopback: settings.allow_loopback,
            allow_private: settings.allow_private,
        };
        let tls = tls::client_config(
            &settings.ca_files,
            settings.client_identity.as_ref(),
            settings.http2,
        )?;
        let mut http = reqwest::Client::builder();
        if !settings.http2 {
            http = http.http1_only();
        }
        let http = http
            .tls_backend_preconfigured(tls)
            .https_only(true)
            .redirect(Policy::none())
            .no_proxy()
            .connect_timeout(settings.connect_timeout)
            .pool_max_idle_per_host(settings.pool_max_idle_per_host)
            .dns_resolver(GuardedResolver::new(policy))
            .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(BuildError::Client)?;
        Ok(Self {
            http,
            policy,
            timeout: settings.timeout,
            max_response_bytes: settings.max_response_bytes,
        })
    }

    /// Sends a request and reads the response body with the cap. Never follows redirects.
    ///
    /// Any HTTP answer, 4xx and 5xx included, is `Ok`: call [`HttpExchange::classify`]
    /// after recording it. `Err` means there was no usable answer, already classified.
    ///
    /// The request is an HTTP client span (OpenTelemetry HTTP conventions) and carries that span's
    /// `traceparent`, so the provider's own trace continues from it.
    pub async fn send(&self, request: OutboundRequest) -> Result<HttpExchange, ProviderError> {
        let span = client_span(&request);
        let mut request = request;
        if let Some(tp) = traceparent_value(&span) {
            request.headers.insert(TRACEPARENT, tp);
        }
        self.send_in(request, span).await
    }

    /// Sends `request` in `span` (made by `client_span`), recording the answer's status,
    /// or the failure, on it.
    pub(crate) async fn send_in(
        &self,
        request: OutboundRequest,
        span: tracing::Span,
    ) -> Result<HttpExchange, ProviderError> {
        let result = self.exchange(request).instrument(span.clone()).await;
        match &result {
            Ok(exchange) => {
                let status = exchange.status.as_u16();
                span.record("http.response.status_code", i64::from(status));
                // For a client, every 4xx and 5xx answer is an error of the call.
                if status >= 400 {
                    span.record("error.type", status.to_string());
                    span.record("otel.status_code", "error");
                }
            }
            Err(e) => {
                span.record("error.type", e.code.as_str());
                span.record("otel.status_code", "error");
            }
        }
        result
    }

    async fn exchange(&self, request: OutboundRequest) -> Result<HttpExchange, ProviderError> {
        self.check_destination(&request.url)?;
        let limit = request.timeout.unwrap_or(self.timeout);
        let host = request.url.host_str().unwrap_or_default().to_owned();
        let method = request.method.clone();
        let started = Instant::now();

        let mut builder = self
            .http
            .request(request.method, request.url)
            .headers(request.headers)
            .timeout(limit);
        if !request.body.is_empty() {
            builder = builder.body(request.body);
        }
        let cap = self.max_response_bytes;
        // reqwest's timeout covers the body too; this outer one is the guarantee that the
        // whole attempt, however it stalls, ends on time.
        let attempt = async {
            let response = builder.send().await.map_err(transport_error)?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = read_capped(response, status, cap).await?;
            Ok::<_, ProviderError>((status, headers, body))
        };
        let outcome = match tokio::time::timeout(limit, attempt).await {
            Ok(outcome) => outcome,
            Err(_elapsed) => Err(timeout_error(limit)),
        };
        let duration = started.elapsed();
        match outcome {
            Ok((status, headers, body)) => {
                tracing::debug!(%method, host, status = status.as_u16(), duration_ms = duration.as_millis() as u64, "provider answered");
                Ok(HttpExchange {
                    status,
                    headers,
                    body,
                    duration,
                })
            }
            Err(err) => {
                tracing::debug!(%method, host, class = %err.class, code = %err.code, duration_ms = duration.as_millis() as u64, "provider call failed");
                Err(err)
            }
        }
    }

    /// Scheme and IP-literal checks: a literal never reaches the resolver, so the policy is
    /// applied here as well.
    fn check_destination(&self, url: &Url) -> Result<(), ProviderError> {
        if url.scheme() != "https" {
            return Err(destination_refused(format!(
                "scheme {}:// is refused, provider URLs must be https://",
                url.scheme()
            )));
        }
        let ip = match url.host() {
            Some(Host::Ipv4(v4)) => v4.into(),
            Some(Host::Ipv6(v6)) => v6.into(),
            Some(Host::Domain(_)) => return Ok(()),
            None => return Err(destination_refused("the URL has no host".to_owned())),
        };
        self.policy.check(ip).map_err(|range| {
            let host = url.host_str().unwrap_or_default().to_owned();
            destination_refused(DestinationRefused { host, ip, range }.to_string())
        })
    }
}

/// The W3C trace context header.
pub(crate) const TRACEPARENT: &str = "traceparent";

/// The HTTP client span of one request, after the OpenTelemetry HTTP conventions: named by
/// its method, kind `client`, with `http.request.method`, `server.address`, `server.port`
/// and `url.full` (as an attempt record may hold it: no credentials, no query values, no
/// fragment), then `http.response.status_code`, or `error.type` when the call failed (the
/// status code of a 4xx or 5xx, else the failure's code, e.g. `timeout`).
pub(crate) fn client_span(request: &OutboundRequest) -> tracing::Span {
    let url = &request.url;
    tracing::info_span!(
        "http request",
        otel.name = %request.method,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = %request.method,
        server.address = url.host_str().unwrap_or_default(),
        server.port = i64::from(url.port_or_known_default().unwrap_or(443)),
        url.full = %switchyard_redact::recordable_url(url),
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// The `traceparent` of `span` as a header value; `None` when traces are off.
pub(crate) fn traceparent_value(span: &tracing::Span) -> Option<http::HeaderValue> {
    switchyard_telemetry::traceparent(span).and_then(|tp| http::HeaderValue::from_str(&tp).ok())
}

/// Reads the body chunk by chunk, giving up as soon as it would exceed `cap` (S3).
async fn read_capped(
    mut response: reqwest::Response,
    status: http::StatusCode,
    cap: usize,
) -> Result<Bytes, ProviderError> {
    let announced = response.content_length().unwrap_or(0);
    if announced > cap as u64 {
        return Err(too_large(cap, status));
    }
    let mut body = BytesMut::with_capacity(announced as usize);
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > cap {
            return Err(too_large(cap, status));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
