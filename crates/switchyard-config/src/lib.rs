//! Switchyard's configuration, in layers: built-in defaults, then `switchyard.toml` (path from
//! `--config` or `SWITCHYARD_CONFIG`), then `SWITCHYARD_<SECTION>__<KEY>` environment variables
//! (plus the contract's `SWITCHYARD_AMQP_URL` and `SWITCHYARD_DATABASE_URL`).
//!
//! Everything is validated when loaded, so a bad configuration stops a process at start-up
//! with a message naming the key. Unknown keys are errors. Secrets are [`Secret`]s. This crate
//! knows the *shape* of provider entries; each kind's crate validates its providers' own
//! options.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use switchyard_core::{Name, Secret};

mod kinds;
mod provider;

pub use kinds::{KindConfig, KindOperation, OperationConfig, Operations};
pub use provider::{ProviderConfig, ProviderOptions};

/// The environment variable naming the config file.
pub const CONFIG_ENV: &str = "SWITCHYARD_CONFIG";
/// The default broker URL of the contract.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The development-only idempotency secret; a warning is logged while it is in use.
pub const DEV_IDEMPOTENCY_SECRET: &str = "switchyard-development-namespace";
/// The development key for sealed ledger records: fine on a laptop, replaced in production
/// (the ledger warns at start while it is in use).
pub const DEV_RECORD_KEY: &str = "switchyard-development-record-key";

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Parsing or merging a layer failed; figment's message names the key and its source.
    /// Not an error `source`: the message already holds it, and a report that walks the
    /// chain would print it twice.
    #[error("configuration: {}", describe_load(.0))]
    Load(Box<figment::Error>),
    /// A value is well-formed but not acceptable.
    #[error("configuration: {key}: {message}")]
    Invalid {
        /// The offending key, e.g. `providers[0].base_url`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Whether a key's value may be or hold a credential: secrets, tokens, passwords, keys, and
/// URLs (which can carry `user:password@`).
fn may_hold_credentials(path: &[String]) -> bool {
    const PARTS: [&str; 6] = ["secret", "token", "password", "key", "url", "auth"];
    path.iter().any(|p| {
        PARTS
            .iter()
            .any(|part| p.to_ascii_lowercase().contains(part))
    })
}

/// figment's errors, told without the values that caused them: a secret given the wrong
/// type (a token where a list was expected) must not be echoed into a log.
fn describe_load(e: &figment::Error) -> String {
    use figment::error::{Actual, Kind};
    let what = |a: &Actual| match a {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a number",
        Actual::Char(_) | Actual::Str(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Unit | Actual::Option => "nothing",
        Actual::Seq => "a list",
        Actual::Map => "a table",
        _ => "a value",
    };
    let told: Vec<String> = e
        .clone()
        .into_iter()
        .map(|err| {
            let key = if err.path.is_empty() {
                "the configuration".to_owned()
            } else {
                err.path.join(".")
            };
            let reason = match &err.kind {
                Kind::InvalidType(a, expected) => format!("found {}, expected {expected}", what(a)),
                Kind::InvalidValue(a, expected) => {
                    format!("{} that is not valid, expected {expected}", what(a))
                }
                // Parsers' messages may quote the value: told only where it cannot be a
                // credential.
                Kind::Message(m) if !may_hold_credentials(&err.path) => m.clone(),
                Kind::Message(_) => "not a valid value".to_owned(),
                // serde's own wording nests backticks ("expected `one of `a`, `b``").
                Kind::UnknownField(_, expected) => {
                    format!("unknown key; the keys here are {}", expected.join(", "))
                }
                Kind::MissingField(field) => format!("missing key `{field}`"),
                Kind::UnknownVariant(found, expected) => format!(
                    "unknown value `{found}`; expected one of {}",
                    expected.join(", ")
                ),
                other => other.to_string(),
            };
            let from = err
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    Some(figment::Source::File(path)) => format!(" (in {})", path.display()),
                    _ => format!(" (in {})", m.name),
                })
                .unwrap_or_default();
            format!("{key}{from}: {reason}")
        })
        .collect();
    told.join("; ")
}

impl From<Box<figment::Error>> for ConfigError {
    fn from(e: Box<figment::Error>) -> Self {
        Self::Load(e)
    }
}

impl ConfigError {
    /// An invalid value at `key`.
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The whole configuration of a Switchyard process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The broker connection.
    #[serde(default)]
    pub amqp: AmqpConfig,
    /// The HTTP ingress.
    #[serde(default)]
    pub ingress: IngressConfig,
    /// Worker processes.
    #[serde(default)]
    pub worker: WorkerConfig,
    /// The retry schedule and its delay tiers.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Defaults for every outbound provider call.
    #[serde(default)]
    pub outbound: OutboundConfig,
    /// Logs and traces.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Limits of every HTTP server.
    #[serde(default)]
    pub http: HttpConfig,
    /// The ledger: every event and provider attempt, queryable.
    #[serde(default)]
    pub ledger: LedgerConfig,
    /// What is masked before anything leaves a worker or reaches a log.
    #[serde(default)]
    pub redaction: RedactionConfig,
    /// Kinds declared in configuration, served by the generic worker.
    #[serde(default)]
    pub kinds: Vec<KindConfig>,
    /// The providers, in code or `type = "http"`.
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
}

/// `[amqp]`: the broker connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpConfig {
    /// Broker URL (`SWITCHYARD_AMQP_URL`), or the URLs of a cluster's nodes separated by
    /// commas; may hold a password, so it is a secret.
    pub url: Secret<String>,
    /// The URLs of a cluster's nodes, the TOML way to give several; not together with `url`.
    pub urls: Vec<Secret<String>>,
    /// Heartbeat interval: a dead connection is detected within about two of these.
    pub heartbeat_secs: u16,
    /// Unacknowledged deliveries per work queue consumer. Unset, each provider's consumer
    /// takes twice its concurrency: a delivery holds its slot until its events are confirmed,
    /// after the provider call ended, so a prefetch equal to the concurrency never reaches it.
    pub prefetch: Option<u16>,
    /// How long a publish may wait for the broker's confirm before it counts as failed.
    pub confirm_timeout_ms: u64,
    /// Upper bound of the jittered reconnect backoff.
    pub reconnect_max_ms: u64,
    /// Redeliveries of one message before the broker dead-letters it (crash-loop guard).
    pub delivery_limit: u32,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            url: Secret::new(DEFAULT_AMQP_URL.to_owned()),
            urls: Vec::new(),
            heartbeat_secs: 10,
            prefetch: None,
            confirm_timeout_ms: 5_000,
            reconnect_max_ms: 5_000,
            delivery_limit: 5,
        }
    }
}

impl AmqpConfig {
    /// Every broker address a process may connect to, in the order given: `urls`, else `url`
    /// split at its commas.
    pub fn broker_urls(&self) -> Vec<Secret<String>> {
        if self.urls.is_empty() {
            split_broker_urls(self.url.expose())
                .into_iter()
                .map(Secret::new)
                .collect()
        } else {
            self.urls.clone()
        }
    }

    /// The first broker address, for one-shot commands and the management API's host.
    pub fn first_broker_url(&self) -> Secret<String> {
        self.broker_urls()
            .into_iter()
            .next()
            .unwrap_or_else(|| self.url.clone())
    }

    /// Checks every address without ever repeating one (they hold passwords).
    fn validate_urls(&self) -> Result<(), ConfigError> {
        let (key, urls): (&str, Vec<Secret<String>>) = if self.urls.is_empty() {
            ("amqp.url", self.broker_urls())
        } else {
            ("amqp.urls", self.urls.clone())
        };
        let total = urls.len();
        for (i, url) in urls.iter().enumerate() {
            if let Err(why) = check_broker_url(url.expose()) {
                let which = if total == 1 {
                    "the broker URL".to_owned()
                } else {
                    format!("address {} of {total}", i + 1)
                };
                return Err(ConfigError::invalid(key, format!("{which} {why}")));
            }
        }
        Ok(())
    }
}

/// The addresses of a comma-separated list, trimmed (a comma inside one URL, in a password,
/// is written `%2C`). Empty entries are kept, so validation can say which one is empty.
pub fn split_broker_urls(list: &str) -> Vec<String> {
    list.split(',').map(|u| u.trim().to_owned()).collect()
}

/// What is wrong with one broker address, in words that never quote it.
fn check_broker_url(url: &str) -> Result<(), &'static str> {
    if url.is_empty() {
        return Err("is empty (a comma too many?)");
    }
    let Some(rest) = url
        .strip_prefix("amqp://")
        .or_else(|| url.strip_prefix("amqps://"))
    else {
        return Err("is not an amqp:// or amqps:// URL");
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err("names no host");
    }
    if let Some((_, port)) = host.rsplit_once(':')
        && !host.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return Err("has a port that is not a number from 0 to 65535");
    }
    Ok(())
}

impl AmqpConfig {
    /// The prefetch of the consumer of a provider called with `concurrency` at once: the
    /// configured one, else twice the concurrency (at least 1, at most what AMQP can carry).
    pub fn work_prefetch(&self, concurrency: usize) -> u16 {
        self.prefetch.unwrap_or_else(|| {
            u16::try_from(concurrency.saturating_mul(2).max(1)).unwrap_or(u16::MAX)
        })
    }
}

/// `[ingress]`: the HTTP front door.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngressConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Accepted bearer tokens.
    pub tokens: Vec<Secret<String>>,
    /// Accept requests without a token: local development only.
    pub auth_disabled: bool,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Seconds a client is told to wait (`Retry-After`) when the broker cannot confirm.
    pub retry_after_secs: u32,
}

impl Default for IngressConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tokens: Vec::new(),
            auth_disabled: false,
            max_body_bytes: 256 * 1024,
            retry_after_secs: 2,
        }
    }
}

/// `[worker]`: integration workers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Address for `/healthz`, `/readyz` and `/metrics`; each kind has its own default.
    pub listen: Option<SocketAddr>,
    /// Concurrent provider calls per provider, unless the provider sets its own.
    pub concurrency: usize,
    /// On SIGTERM, how long in-flight work may take before it is left for redelivery.
    pub shutdown_grace_ms: u64,
    /// Secret namespace of the idempotency keys sent to providers: the same on every worker.
    pub idempotency_secret: Secret<String>,
    /// How long a command's identity is remembered (contract 7): a repeat within it is a
    /// duplicate or a conflict, never executed again. Never shorter in effect than the longest
    /// retry schedule plus the longest wait of a long-running operation.
    #[serde(with = "humantime_serde")]
    pub idempotency_window: Duration,
    /// Quick in-process retries of fast transient failures before a delayed retry.
    pub quick_retries: u32,
    /// Pause before a quick retry.
    pub quick_retry_delay_ms: u64,
    /// The circuit breaker of each provider (per worker process).
    pub circuit: CircuitConfig,
}

/// `[worker.circuit]`: when a provider mostly fails (transient errors and timeouts; a
/// permanent error is the request's fault, not the provider's), stop calling it for a while:
/// its commands wait in a delay tier instead of piling onto it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitConfig {
    /// Open at this share of failed calls (0 < rate <= 1) …
    pub failure_rate: f64,
    /// … among the calls of the last `window_ms`, once there are at least `min_calls`.
    pub min_calls: usize,
    /// The sliding window. Ten seconds by default, as Hystrix's rolling window: long enough
    /// to judge a provider by `min_calls`, short enough to notice an outage soon. It is kept
    /// as ten counter pairs, so its length costs nothing per call; a call counts for at least
    /// the window and at most a tenth longer (docs/design/0007).
    pub window_ms: u64,
    /// How long the circuit stays open before letting a few trial calls through.
    pub open_ms: u64,
    /// Trial calls while half-open; their outcome closes or reopens the circuit.
    pub half_open_calls: usize,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        Self {
            failure_rate: 0.5,
            min_calls: 20,
            window_ms: 10_000,
            open_ms: 30_000,
            half_open_calls: 3,
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            listen: None,
            concurrency: 64,
            shutdown_grace_ms: 15_000,
            idempotency_secret: Secret::new(DEV_IDEMPOTENCY_SECRET.to_owned()),
            idempotency_window: Duration::from_secs(24 * 3600),
            quick_retries: 1,
            quick_retry_delay_ms: 100,
            circuit: CircuitConfig::default(),
        }
    }
}

/// `[retry]`: capped exponential backoff with full jitter, waiting in delay tiers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts before a transient failure is final, unless the provider sets its own.
    pub max_attempts: u32,
    /// Backoff of the first retry.
    #[serde(with = "humantime_serde")]
    pub base: Duration,
    /// Backoff never grows past this.
    #[serde(with = "humantime_serde")]
    pub cap: Duration,
    /// The delay queues: a retry waits in the shortest tier at least as long as its backoff.
    #[serde(with = "tiers")]
    pub tiers: Vec<Duration>,
}

mod tiers {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|d| humantime_serde::re::humantime::format_duration(*d).to_string())
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| {
                humantime_serde::re::humantime::parse_duration(s).map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        let s = Duration::from_secs;
        Self {
            max_attempts: 8,
            base: s(1),
            cap: s(600),
            tiers: vec![s(1), s(5), s(30), s(120), s(600), s(3600)],
        }
    }
}

/// `[outbound]`: defaults for every provider call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Time to establish a connection.
    pub connect_timeout_ms: u64,
    /// Total time of one attempt, body included, unless the provider sets its own.
    pub timeout_ms: u64,
    /// Largest response body read from a provider.
    pub max_response_bytes: usize,
    /// Allow providers on loopback addresses (tests, `switchyard up`).
    pub allow_loopback: bool,
    /// Allow providers on private, link-local and similar addresses.
    pub allow_private: bool,
    /// Offer HTTP/2 to providers. Off: each call in flight has its own HTTP/1.1 connection,
    /// so `concurrency` calls really reach the provider at once.
    pub http2: bool,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 3_000,
            timeout_ms: 10_000,
            max_response_bytes: 1024 * 1024,
            allow_loopback: false,
            allow_private: false,
            http2: false,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// JSON when stderr is not a terminal, human-readable when it is.
    #[default]
    Auto,
    /// Always JSON lines.
    Json,
    /// Always human-readable.
    Pretty,
}

/// `[http]`: limits of every HTTP server Switchyard runs (the ingress, the ledger's API, each
/// process's `/metrics` and health endpoints), so slow or idle clients cannot hold them.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// A connection that has not sent a whole request head within this long is closed (it
    /// also bounds how long an idle keep-alive connection stays open).
    pub header_timeout_ms: u64,
    /// A request body not read whole within this long fails (408).
    pub body_timeout_ms: u64,
    /// Most connections open at once per server; one past them is closed at once.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            max_connections: 10_000,
        }
    }
}

/// `[telemetry]`: logs (traces and metrics follow in their own issue).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Log format.
    pub log_format: LogFormat,
    /// `tracing` filter directives; `RUST_LOG` wins when set.
    pub log_filter: Option<String>,
}

/// `[ledger]`: the record of every lifecycle step and provider attempt.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// Declare the ledger's queues, so events and attempt records wait for it while it is
    /// down. Turn off only where no ledger runs.
    pub enabled: bool,
    /// `sqlite://path` (the embedded default) or `postgres://...` (`SWITCHYARD_DATABASE_URL`).
    pub database_url: Secret<String>,
    /// Where the ledger serves its query API, `/healthz`, `/readyz` and `/metrics`.
    pub listen: SocketAddr,
    /// Most deliveries written in one transaction.
    pub batch_size: usize,
    /// Longest a delivery waits for its batch to fill.
    pub batch_max_wait_ms: u64,
    /// How long request and response bodies of attempts are kept; lifecycle rows are kept forever.
    #[serde(with = "humantime_serde")]
    pub attempt_body_retention: Duration,
    /// The key that seals what the ledger must keep whole (a waiting command, for replay)
    /// while the readable copy beside it is redacted (`SWITCHYARD_LEDGER__RECORD_KEY`).
    pub record_key: Secret<String>,
}

/// The default embedded ledger database.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://switchyard-ledger.db?mode=rwc";

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            database_url: Secret::new(DEFAULT_DATABASE_URL.to_owned()),
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            batch_size: 500,
            batch_max_wait_ms: 50,
            attempt_body_retention: Duration::from_secs(30 * 24 * 3600),
            record_key: Secret::new(DEV_RECORD_KEY.to_owned()),
        }
    }
}

/// `[redaction]`: masking applied to attempt records, events, dead-letter headers and logs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactionConfig {
    /// JSON field names (case-insensitive) whose values are replaced by `[REDACTED]`, in
    /// addition to the built-in ones (passwords, secrets, tokens, API keys, CVV/CVC).
    pub secret_fields: Vec<String>,
    /// Largest body kept in an attempt record, in bytes.
    pub max_body_bytes: usize,
}

impl Default for RedactionConfig {
    fn default() -> Self {
        Self {
            secret_fields: Vec::new(),
            max_body_bytes: 16 * 1024,
        }
    }
}

impl Config {
    /// Loads the layers: defaults, then the file (`path`, else `SWITCHYARD_CONFIG`, else
    /// `./switchyard.toml` when it exists), then the environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let file: Option<PathBuf> = path
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from))
            .or_else(|| {
                let p = PathBuf::from("switchyard.toml");
                p.exists().then_some(p)
            });
        if let Some(f) = &file
            && !f.exists()
        {
            return Err(ConfigError::invalid(
                "--config",
                format!("config file {} does not exist", f.display()),
            ));
        }
        Self::from_figment(Self::figment(file.as_deref()))
    }

    /// Parses a configuration from TOML text plus the environment (for tests and `up`).
    pub fn from_toml_str(toml: &str) -> Result<Self, ConfigError> {
        Self::from_figment(Self::base().merge(Toml::string(toml)).merge(env_layer()))
    }

    fn base() -> Figment {
        Figment::from(Serialized::defaults(serde_json::json!({})))
    }

    fn figment(file: Option<&Path>) -> Figment {
        let mut f = Self::base();
        if let Some(file) = file {
            f = f.merge(Toml::file(file));
        }
        f.merge(env_layer())
    }

    fn from_figment(f: Figment) -> Result<Self, ConfigError> {
        // Two places for the broker addresses would leave a reader guessing which one is used.
        let urls_given = f
            .find_value("amqp.urls")
            .is_ok_and(|v| v.as_array().is_none_or(|a| !a.is_empty()));
        if urls_given && f.find_value("amqp.url").is_ok() {
            return Err(ConfigError::invalid(
                "amqp.urls",
                "amqp.url is set too: give the broker addresses in one of them \
                 (SWITCHYARD_AMQP_URL, which may list several, replaces both)",
            ));
        }
        let config: Config = f.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.amqp.validate_urls()?;
        if self.amqp.heartbeat_secs == 0 {
            return Err(ConfigError::invalid(
                "amqp.heartbeat_secs",
                "must be at least 1",
            ));
        }
        if self.amqp.prefetch == Some(0) {
            return Err(ConfigError::invalid("amqp.prefetch", "must be at least 1"));
        }
        // Sizes, limits and timeouts where zero would refuse everything or wait forever.
        let at_least_one: [(&str, u64); 11] = [
            ("amqp.confirm_timeout_ms", self.amqp.confirm_timeout_ms),
            ("amqp.delivery_limit", u64::from(self.amqp.delivery_limit)),
            ("ingress.max_body_bytes", self.ingress.max_body_bytes as u64),
            (
                "outbound.connect_timeout_ms",
                self.outbound.connect_timeout_ms,
            ),
            ("outbound.timeout_ms", self.outbound.timeout_ms),
            (
                "outbound.max_response_bytes",
                self.outbound.max_response_bytes as u64,
            ),
            (
                "redaction.max_body_bytes",
                self.redaction.max_body_bytes as u64,
            ),
            ("ledger.batch_size", self.ledger.batch_size as u64),
            ("http.header_timeout_ms", self.http.header_timeout_ms),
            ("http.body_timeout_ms", self.http.body_timeout_ms),
            ("http.max_connections", self.http.max_connections as u64),
        ];
        if let Some((key, _)) = at_least_one.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::invalid(*key, "must be at least 1"));
        }
        let circuit = &self.worker.circuit;
        if !(circuit.failure_rate > 0.0 && circuit.failure_rate <= 1.0) {
            return Err(ConfigError::invalid(
                "worker.circuit.failure_rate",
                "must be within (0, 1]",
            ));
        }
        if circuit.min_calls == 0 || circuit.half_open_calls == 0 {
            return Err(ConfigError::invalid(
                "worker.circuit",
                "min_calls and half_open_calls must be at least 1",
            ));
        }
        if circuit.window_ms == 0 || circuit.open_ms == 0 {
            return Err(ConfigError::invalid(
                "worker.circuit",
                "window_ms and open_ms must be at least 1",
            ));
        }
        if self.worker.concurrency == 0 {
            return Err(ConfigError::invalid(
                "worker.concurrency",
                "must be at least 1",
            ));
        }
        if self.worker.idempotency_secret.expose().is_empty() {
            return Err(ConfigError::invalid(
                "worker.idempotency_secret",
                "must not be empty",
            ));
        }
        if !self.ingress.auth_disabled && self.ingress.tokens.iter().any(|t| t.expose().is_empty())
        {
            return Err(ConfigError::invalid(
                "ingress.tokens",
                "a token must not be empty",
            ));
        }
        if self.ledger.record_key.expose().is_empty() {
            return Err(ConfigError::invalid(
                "ledger.record_key",
                "must not be empty",
            ));
        }
        if self.worker.idempotency_window.is_zero() {
            return Err(ConfigError::invalid(
                "worker.idempotency_window",
                "must be longer than zero",
            ));
        }
        if self.retry.max_attempts == 0 {
            return Err(ConfigError::invalid(
                "retry.max_attempts",
                "must be at least 1",
            ));
        }
        if self.retry.max_attempts > switchyard_core::lifecycle::MAX_ATTEMPTS_PER_RUN {
            return Err(ConfigError::invalid(
                "retry.max_attempts",
                format!(
                    "must be at most {}",
                    switchyard_core::lifecycle::MAX_ATTEMPTS_PER_RUN
                ),
            ));
        }
        if self.retry.tiers.is_empty() {
            return Err(ConfigError::invalid(
                "retry.tiers",
                "at least one delay tier is needed",
            ));
        }
        if self.retry.tiers.windows(2).any(|w| w[0] >= w[1]) {
            return Err(ConfigError::invalid(
                "retry.tiers",
                "tiers must be strictly increasing",
            ));
        }
        if self.retry.tiers.iter().any(|t| t.as_millis() == 0) {
            return Err(ConfigError::invalid(
                "retry.tiers",
                "a tier must be at least 1ms",
            ));
        }
        kinds::validate_kinds(&self.kinds)?;
        let mut seen = std::collections::HashSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            p.validate(i)?;
            if !seen.insert((p.kind.clone(), p.name.clone())) {
                return Err(ConfigError::invalid(
                    format!("providers[{i}].name"),
                    format!(
                        "provider {:?} of kind {:?} is declared twice",
                        p.name, p.kind
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The providers of `kind`, with their index in `providers` (for error messages).
    pub fn providers_of<'a>(
        &'a self,
        kind: &'a Name,
    ) -> impl Iterator<Item = (usize, &'a ProviderConfig)> + 'a {
        self.providers
            .iter()
            .enumerate()
            .filter(move |(_, p)| p.kind == *kind)
    }

    /// Whether the development idempotency secret is still in use.
    pub fn uses_dev_idempotency_secret(&self) -> bool {
        self.worker.idempotency_secret.expose() == DEV_IDEMPOTENCY_SECRET
    }
}

/// `SWITCHYARD_<SECTION>__<KEY>` variables, plus the contract's two URL variables.
fn env_layer() -> Figment {
    Figment::new()
        .merge(
            Env::prefixed("SWITCHYARD_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        )
        .merge(
            Env::raw()
                .only(&["SWITCHYARD_AMQP_URL"])
                .map(|_| "amqp.url".into()),
        )
        .merge(amqp_url_replaces_urls())
        .merge(
            Env::raw()
                .only(&["SWITCHYARD_DATABASE_URL"])
                .map(|_| "ledger.database_url".into()),
        )
}

/// `SWITCHYARD_AMQP_URL` replaces the file's `urls` as well as its `url`: the environment wins
/// over the file, whichever key the file used.
fn amqp_url_replaces_urls() -> Figment {
    let mut f = Figment::new();
    if std::env::var_os("SWITCHYARD_AMQP_URL").is_some() {
        f = f.merge(Serialized::default("amqp.urls", Vec::<String>::new()));
    }
    f
}

#[cfg(test)]
// figment::Jail closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_are_the_contract() {
        Jail::expect_with(|_| {
            let c = Config::from_toml_str("").unwrap();
            assert_eq!(c.amqp.url.expose(), DEFAULT_AMQP_URL);
            assert_eq!(c.amqp.heartbeat_secs, 10);
            assert_eq!(c.ingress.max_body_bytes, 256 * 1024);
            assert!(c.uses_dev_idempotency_secret());
            Ok(())
        });
    }

    #[test]
    fn a_wrongly_typed_secret_is_not_echoed() {
        Jail::expect_with(|_| {
            let err = Config::from_toml_str("[ingress]\ntokens = \"tok_CANARY_1234\"\n")
                .unwrap_err()
                .to_string();
            assert!(!err.contains("CANARY"), "{err}");
            assert!(
                err.contains("ingress.tokens") && err.contains("found a string"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn zero_sizes_limits_and_timeouts_are_refused_naming_the_key() {
        Jail::expect_with(|_| {
            for (section, key) in [
                ("amqp", "delivery_limit"),
                ("amqp", "confirm_timeout_ms"),
                ("ingress", "max_body_bytes"),
                ("outbound", "timeout_ms"),
                ("outbound", "connect_timeout_ms"),
                ("outbound", "max_response_bytes"),
                ("redaction", "max_body_bytes"),
            ] {
                let err = Config::from_toml_str(&format!("[{section}]\n{key} = 0\n"))
                    .unwrap_err()
                    .to_string();
                assert_eq!(
                    err,
                    format!("configuration: {section}.{key}: must be at least 1")
                );
            }
            Ok(())
        });
    }

    #[test]
    fn env_overrides_file() {
        Jail::expect_with(|jail| {
            jail.set_env("SWITCHYARD_AMQP_URL", "amqp://u:p@broker:5672/x");
            jail.set_env("SWITCHYARD_INGRESS__MAX_BODY_BYTES", "1024");
            jail.set_env("SWITCHYARD_RETRY__MAX_ATTEMPTS", "3");
            let c = Config::from_toml_str("[retry]\nmax_attempts = 5\n").unwrap();
            assert_eq!(c.amqp.url.expose(), "amqp://u:p@broker:5672/x");
            assert_eq!(c.ingress.max_body_bytes, 1024);
            assert_eq!(c.retry.max_attempts, 3);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        Jail::expect_with(|jail| {
            let e = Config::from_toml_str("[amqp]\nhartbeat_secs = 3\n").unwrap_err();
            assert!(e.to_string().contains("hartbeat_secs"), "{e}");
            // Plain words: no profile name, no nested backticks, and the keys that exist.
            assert!(!e.to_string().contains("default."), "{e}");
            assert!(!e.to_string().contains("``"), "{e}");
            assert!(e.to_string().contains("heartbeat_secs"), "{e}");
            // Said once: a report walking the error chain must not repeat it.
            let report = format!("{:#}", anyhow::Error::from(e));
            assert_eq!(report.matches("TOML source string").count(), 1, "{report}");
            jail.set_env("SWITCHYARD_WORKER__CONCURENCY", "3");
            let e = Config::from_toml_str("").unwrap_err();
            assert!(e.to_string().contains("concurency"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn tiers_parse_and_must_increase() {
        Jail::expect_with(|_| {
            let c =
                Config::from_toml_str("[retry]\ntiers = [\"100ms\", \"2s\", \"1m\"]\n").unwrap();
            assert_eq!(c.retry.tiers[0], Duration::from_millis(100));
            assert_eq!(c.retry.tiers[2], Duration::from_secs(60));
            let e = Config::from_toml_str("[retry]\ntiers = [\"2s\", \"1s\"]\n").unwrap_err();
            assert!(e.to_string().contains("retry.tiers"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn broker_urls_come_from_a_list_in_url_or_from_urls() {
        Jail::expect_with(|jail| {
            let c = Config::from_toml_str("").unwrap();
            let one: Vec<String> = c
                .amqp
                .broker_urls()
                .iter()
                .map(|u| u.expose().clone())
                .collect();
            assert_eq!(one, [DEFAULT_AMQP_URL]);

            let c = Config::from_toml_str(
                "[amqp]\nurl = \"amqp://u:p@a:5681/%2f, amqp://u:p@b:5682/%2f,amqps://u:p@c/v\"\n",
            )
            .unwrap();
            let list: Vec<String> = c
                .amqp
                .broker_urls()
                .iter()
                .map(|u| u.expose().clone())
                .collect();
            assert_eq!(
                list,
                [
                    "amqp://u:p@a:5681/%2f",
                    "amqp://u:p@b:5682/%2f",
                    "amqps://u:p@c/v"
                ]
            );
            assert_eq!(c.amqp.first_broker_url().expose(), "amqp://u:p@a:5681/%2f");

            let c = Config::from_toml_str(
                "[amqp]\nurls = [\"amqp://u:p@a:5681/x\", \"amqp://u:p@b:5682/x\"]\n",
            )
            .unwrap();
            assert_eq!(c.amqp.broker_urls().len(), 2);
            assert_eq!(c.amqp.broker_urls()[1].expose(), "amqp://u:p@b:5682/x");

            // The environment wins over the file, whichever key the file used.
            jail.set_env(
                "SWITCHYARD_AMQP_URL",
                "amqp://u:p@x:5681/e,amqp://u:p@y:5682/e",
            );
            let c = Config::from_toml_str("[amqp]\nurls = [\"amqp://u:p@a:5681/x\"]\n").unwrap();
            let list: Vec<String> = c
                .amqp
                .broker_urls()
                .iter()
                .map(|u| u.expose().clone())
                .collect();
            assert_eq!(list, ["amqp://u:p@x:5681/e", "amqp://u:p@y:5682/e"]);
            Ok(())
        });
    }

    #[test]
    fn a_bad_broker_address_is_refused_without_echoing_it() {
        Jail::expect_with(|_| {
            for (toml, says) in [
                (
                    "[amqp]\nurl = \"amqp://u:CANARY@a:1/x,,amqp://u:CANARY@b:2/x\"\n",
                    "configuration: amqp.url: address 2 of 3 is empty (a comma too many?)",
                ),
                (
                    "[amqp]\nurl = \"amqp://u:CANARY@a:1/x,\"\n",
                    "configuration: amqp.url: address 2 of 2 is empty (a comma too many?)",
                ),
                (
                    "[amqp]\nurl = \"http://u:CANARY@a:1/x\"\n",
                    "configuration: amqp.url: the broker URL is not an amqp:// or amqps:// URL",
                ),
                (
                    "[amqp]\nurls = [\"amqp://u:CANARY@a:1/x\", \"amqp://u:CANARY@b:port/x\"]\n",
                    "configuration: amqp.urls: address 2 of 2 has a port that is not a number from 0 to 65535",
                ),
                (
                    "[amqp]\nurls = [\"amqp://u:CANARY@/x\"]\n",
                    "configuration: amqp.urls: the broker URL names no host",
                ),
            ] {
                let err = Config::from_toml_str(toml).unwrap_err().to_string();
                assert_eq!(err, says);
                assert!(!err.contains("CANARY"), "{err}");
            }
            Ok(())
        });
    }

    #[test]
    fn url_and_urls_together_are_refused() {
        Jail::expect_with(|_| {
            let err = Config::from_toml_str(
                "[amqp]\nurl = \"amqp://u:CANARY@a:1/x\"\nurls = [\"amqp://u:CANARY@b:2/x\"]\n",
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.starts_with("configuration: amqp.urls: amqp.url is set too"),
                "{err}"
            );
            assert!(!err.contains("CANARY"), "{err}");
            // An empty list says nothing, so it is no conflict.
            Config::from_toml_str("[amqp]\nurl = \"amqp://u:p@a:1/x\"\nurls = []\n").unwrap();
            Ok(())
        });
    }

    #[test]
    fn the_prefetch_is_above_the_concurrency_unless_set() {
        let amqp = AmqpConfig::default();
        assert_eq!(amqp.work_prefetch(64), 128);
        assert_eq!(amqp.work_prefetch(0), 1);
        assert_eq!(amqp.work_prefetch(100_000), u16::MAX);
        let set = AmqpConfig {
            prefetch: Some(10),
            ..AmqpConfig::default()
        };
        assert_eq!(set.work_prefetch(64), 10);
    }

    #[test]
    fn secrets_do_not_print() {
        Jail::expect_with(|_| {
            let c = Config::from_toml_str("[ingress]\ntokens = [\"tok_canary\"]\n").unwrap();
            assert!(!format!("{c:?}").contains("tok_canary"));
            assert!(!format!("{c:?}").contains("guest:guest"));
            Ok(())
        });
    }
}
