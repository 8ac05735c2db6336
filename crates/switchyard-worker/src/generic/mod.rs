//! The generic `type = "http"` provider of the contract (section 6): a new integration by
//! configuration alone. Each operation may declare how it is called and read (`shape`), the
//! provider how it authenticates (`auth`) and how its errors are classified (`errors`).

pub mod auth;
pub mod callbacks;
pub mod errors;
pub mod shape;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use switchyard_config::{ConfigError, ProviderConfig};
use switchyard_core::{
    CallbackOutcome, Completion, ErrorClass, ErrorInfo, Name, Provider, ProviderCall,
    ProviderError, ProviderOutcome,
};
use switchyard_http::{
    OutboundClient, OutboundRequest, Redactor, parse_retry_after, validate_provider_url,
};

use self::auth::{Auth, AuthConfig};
use self::errors::{ErrorRule, classify_with};
use self::shape::{OperationShape, Reading};
use switchyard_webhooks::{Notice, Receiver, Scheme, StandardWebhooks, Verified, WebhookReader};
use url::Url;

use crate::kind::ProviderContext;
use crate::secrets::provider_secrets;

/// The generic provider's own options in its `[[providers]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    /// `POST {base_url}/{operation}`.
    base_url: String,
    /// Environment variable holding the Standard Webhooks secret (`whsec_...`).
    #[serde(default)]
    webhook_secret_env: Option<String>,
    /// Or a file holding it (a mounted secret); surrounding whitespace is ignored.
    #[serde(default)]
    webhook_secret_file: Option<std::path::PathBuf>,
    /// Environment variable holding a bearer token sent to the provider (the short form of
    /// `auth = { type = "bearer", token_env = "..." }`).
    #[serde(default)]
    bearer_token_env: Option<String>,
    /// How requests authenticate.
    #[serde(default)]
    auth: Option<AuthConfig>,
    /// Headers sent on every request (not secrets: those go in `auth`).
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// The header carrying the idempotency key (`Idempotency-Key` unless set).
    #[serde(default)]
    idempotency_header: Option<String>,
    /// Rows classifying the provider's errors, checked in order before the default rules.
    #[serde(default)]
    errors: Vec<ErrorRule>,
    /// Callbacks read by declaration (instead of the report shape under
    /// `webhook_secret_*`).
    #[serde(default)]
    callbacks: Option<self::callbacks::CallbackConfig>,
    /// For a provider without callbacks: `GET {base_url}/{status_path}`, with `{reference}`
    /// replaced, answers how accepted work is going (the callback body's shape).
    #[serde(default)]
    status_path: Option<String>,
    /// Whether the provider de-duplicates by `Idempotency-Key` (the default). `false`: it
    /// executes every request, so Switchyard never calls it twice for one attempt and reports
    /// a crash during the call as `unknown`.
    #[serde(default = "yes")]
    idempotent: bool,
}

fn yes() -> bool {
    true
}

/// What a reference escapes to stay one path segment: all but `-`, `_` and `~` (dots too, and
/// all-dot references are refused, since URL parsing folds `%2e` segments like `.`).
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'~');

/// Where `{reference}` goes in `status_path`.
const REFERENCE_PLACEHOLDER: &str = "{reference}";

/// How a generic provider reports accepted work (contract section 6): the body of its
/// callbacks and of its status answers.
#[derive(Debug, Deserialize)]
struct Report {
    reference: String,
    status: ReportStatus,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ReportStatus {
    Succeeded,
    Failed,
    Pending,
}

/// Reads a generic provider's report (a verified callback body or a status answer) into the
/// reference it is about and its outcome, redacted.
pub fn parse_report(
    raw: &[u8],
    redactor: &Redactor,
) -> Result<(String, CallbackOutcome), serde_json::Error> {
    let report: Report = serde_json::from_slice(raw)?;
    let outcome = match report.status {
        ReportStatus::Succeeded => CallbackOutcome::Succeeded {
            result: redactor.redacted(report.result.unwrap_or(Value::Null)),
        },
        ReportStatus::Failed => CallbackOutcome::Failed {
            error: ErrorInfo::new(
                ErrorClass::Permanent,
                "provider_failed",
                redactor.text(
                    report
                        .error
                        .as_deref()
                        .unwrap_or("the provider reported a failure"),
                ),
            ),
        },
        ReportStatus::Pending => CallbackOutcome::Pending,
    };
    Ok((report.reference, outcome))
}

/// Reads the generic provider's callbacks: [`parse_report`] bodies, de-duplicated on the
/// signed `webhook-id`.
#[derive(Debug)]
struct ReportReader {
    redactor: Redactor,
}

impl WebhookReader for ReportReader {
    fn read(&self, delivery: &Verified<'_>) -> Result<Option<Notice>, String> {
        let id = delivery
            .signed_id()
            .ok_or("a Standard Webhooks delivery without its id")?;
        let (reference, outcome) = parse_report(delivery.body(), &self.redactor)
            .map_err(|e| format!("not a callback of this provider: {e}"))?;
        Ok(Some(Notice {
            id: id.to_owned(),
            reference,
            outcome,
        }))
    }
}

/// A provider described only by configuration.
#[derive(Debug, Clone)]
pub struct GenericHttpProvider {
    name: Name,
    operations: Vec<Name>,
    shapes: HashMap<String, OperationShape>,
    base_url: Url,
    client: OutboundClient,
    auth: Arc<Auth>,
    headers: Vec<(HeaderName, HeaderValue)>,
    idempotency_header: HeaderName,
    errors: Arc<[ErrorRule]>,
    status_path: Option<String>,
    idempotent: bool,
    redactor: Redactor,
}

/// The default shape: `POST {base_url}/{operation}` with the payload as JSON.
static DEFAULT_SHAPE: std::sync::LazyLock<OperationShape> =
    std::sync::LazyLock::new(OperationShape::default);

impl GenericHttpProvider {
    /// The Standard Webhooks keys of a generic provider's entry, if it takes callbacks: the
    /// secret text (env or file) holds one `whsec_` secret, or several separated by
    /// whitespace while a secret is rotated (a delivery signed with any of them verifies).
    /// Empty, unset or malformed is an error naming the key: it would make every signature
    /// check meaningless.
    fn webhook_keys(
        config: &ProviderConfig,
        index: usize,
    ) -> Result<Option<Vec<StandardWebhooks>>, ConfigError> {
        let opts: Options = config.parse_options(index)?;
        let keys = provider_secrets(
            index,
            "webhook_secret",
            opts.webhook_secret_env.as_deref(),
            opts.webhook_secret_file.as_deref(),
            StandardWebhooks::new,
        )?;
        Ok(keys.map(|(_, keys)| keys))
    }

    /// Its webhooks, when it has a secret: Standard Webhooks, bodies in the report shape.
    pub fn receiver(
        config: &ProviderConfig,
        index: usize,
        redactor: &Redactor,
    ) -> Result<Option<Receiver>, ConfigError> {
        let opts: Options = config.parse_options(index)?;
        if let Some(callbacks) = &opts.callbacks {
            if opts.webhook_secret_env.is_some() || opts.webhook_secret_file.is_some() {
                return Err(ConfigError::invalid(
                    format!("{}.callbacks", ProviderConfig::key(index)),
                    "set callbacks or webhook_secret_*, not both",
                ));
            }
            return callbacks.receiver(index, redactor).map(Some);
        }
        Ok(Self::webhook_keys(config, index)?.map(|keys| Receiver {
            scheme: Scheme::Standard(keys),
            reader: Arc::new(ReportReader {
                redactor: redactor.clone(),
            }),
        }))
    }

    /// Builds the provider from its entry; errors name the offending key.
    pub fn from_config(
        config: &ProviderConfig,
        index: usize,
        ctx: &ProviderContext,
    ) -> Result<Self, ConfigError> {
        let key = ProviderConfig::key(index);
        let opts: Options = config.parse_options(index)?;
        let mut base_url = validate_provider_url(&format!("{key}.base_url"), &opts.base_url)
            .map_err(|e| ConfigError::invalid(format!("{key}.base_url"), e.to_string()))?;
        if !base_url.path().ends_with('/') {
            base_url.set_path(&format!("{}/", base_url.path()));
        }
        if config.operations.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.operations"),
                "a generic http provider must list its operations",
            ));
        }
        Self::receiver(config, index, &ctx.redactor)?;
        let client = ctx.client(index)?;
        let auth = Auth::build(
            &key,
            opts.auth.as_ref(),
            opts.bearer_token_env.as_deref(),
            &client,
        )?;
        let mut shapes = HashMap::new();
        for op in config.operations.declared() {
            let op_key = format!("{key}.operations.{}", op.name);
            let shape: OperationShape = op
                .options
                .parse()
                .map_err(|e| ConfigError::invalid(op_key.clone(), e.to_string()))?;
            shape
                .check(&op_key)
                .map_err(|e| ConfigError::invalid(op_key.clone(), e))?;
            shapes.insert(op.name.to_string(), shape);
        }
        for (i, rule) in opts.errors.iter().enumerate() {
            let row = format!("{key}.errors[{i}]");
            rule.check(&row)
                .map_err(|e| ConfigError::invalid(row.clone(), e))?;
        }
        let headers = opts
            .headers
            .iter()
            .map(|(k, v)| {
                Ok((
                    HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                        ConfigError::invalid(
                            format!("{key}.headers"),
                            format!("{k:?} is not a header name"),
                        )
                    })?,
                    HeaderValue::from_str(v).map_err(|_| {
                        ConfigError::invalid(format!("{key}.headers.{k}"), "not a header value")
                    })?,
                ))
            })
            .collect::<Result<_, ConfigError>>()?;
        let idempotency_header = HeaderName::from_bytes(
            opts.idempotency_header
                .as_deref()
                .unwrap_or("idempotency-key")
                .as_bytes(),
        )
        .map_err(|_| {
            ConfigError::invalid(format!("{key}.idempotency_header"), "not a header name")
        })?;
        if let Some(path) = &opts.status_path
            && (!path.contains(REFERENCE_PLACEHOLDER) || path.starts_with('/'))
        {
            return Err(ConfigError::invalid(
                format!("{key}.status_path"),
                format!(
                    "must be relative to base_url and contain {REFERENCE_PLACEHOLDER}, e.g. \"operations/{REFERENCE_PLACEHOLDER}\""
                ),
            ));
        }
        Ok(Self {
            name: config.name.clone(),
            operations: config.operations.names().to_vec(),
            shapes,
            base_url,
            client,
            auth: Arc::new(auth),
            headers,
            idempotency_header,
            errors: opts.errors.into(),
            status_path: opts.status_path,
            idempotent: opts.idempotent,
            redactor: ctx.redactor.clone(),
        })
    }

    /// How `operation` is called and read.
    pub fn shape(&self, operation: &str) -> &OperationShape {
        self.shapes.get(operation).unwrap_or(&DEFAULT_SHAPE)
    }

    /// How it authenticates (for `providers explain` and tests).
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Its error table.
    pub fn error_rules(&self) -> &[ErrorRule] {
        &self.errors
    }

    /// Its base URL.
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// The header carrying the idempotency key.
    pub fn idempotency_header(&self) -> &HeaderName {
        &self.idempotency_header
    }

    /// Whether the provider de-duplicates by that key.
    pub fn is_idempotent(&self) -> bool {
        self.idempotent
    }

    fn headers(&self, call: &ProviderCall) -> HeaderMap {
        let mut h = HeaderMap::new();
        // Sent even when the provider ignores it (`idempotent = false`): it names the
        // attempt, and an unknown outcome's status check asks by it.
        if let Ok(v) = HeaderValue::from_str(&call.idempotency_key.to_string()) {
            h.insert(self.idempotency_header.clone(), v);
        }
        if let Ok(v) = HeaderValue::from_str(&call.command.id.to_string()) {
            h.insert(HeaderName::from_static("x-switchyard-command-id"), v);
        }
        for (k, v) in &self.headers {
            h.insert(k.clone(), v.clone());
        }
        h
    }

    /// Sends `request` with credentials; after a 401 with an OAuth2 token, once more with a
    /// fresh token (the provider may have revoked or expired it early).
    async fn send(
        &self,
        request: OutboundRequest,
        call: &ProviderCall,
    ) -> Result<switchyard_http::HttpExchange, ProviderError> {
        let mut first = request.clone();
        let used = self.auth.apply(&mut first).await?;
        let exchange = self
            .client
            .send_recorded(first, call, &self.redactor)
            .await?;
        if exchange.status != StatusCode::UNAUTHORIZED || !self.auth.refused(&used).await {
            return Ok(exchange);
        }
        let mut again = request;
        self.auth.apply(&mut again).await?;
        self.client.send_recorded(again, call, &self.redactor).await
    }
}

fn invalid_response(message: impl Into<String>) -> ProviderError {
    ProviderError::new(ErrorClass::Permanent, "invalid_response", message)
}

#[async_trait::async_trait]
impl Provider for GenericHttpProvider {
    fn name(&self) -> &Name {
        &self.name
    }

    fn operations(&self) -> &[Name] {
        &self.operations
    }

    async fn call(&self, call: &ProviderCall) -> Result<ProviderOutcome, ProviderError> {
        let operation = call.command.operation.as_str();
        let shape = self.shape(operation);
        // A payload that cannot fill the templates fails here, before anything is sent.
        let shaped = shape.build(
            operation,
            &call.command.payload,
            &call.command.id.to_string(),
        )?;
        let url = self
            .base_url
            .join(&shaped.path_and_query)
            .map_err(|e| invalid_response(format!("cannot build the operation URL: {e}")))?;
        let mut headers = self.headers(call);
        for (k, v) in &shaped.headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                headers.insert(k, v);
            }
        }
        // serde_json's map is ordered, so the same payload is the same bytes on every attempt.
        let body = match shaped.body {
            Some((bytes, content_type)) => {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
                Bytes::from(bytes)
            }
            None => Bytes::new(),
        };
        let request = OutboundRequest {
            method: shaped.method,
            url,
            headers,
            body,
            timeout: None,
        };
        let exchange = self.send(request, call).await?;
        if exchange.status == StatusCode::CONFLICT {
            // A request with the same idempotency key is still executing at the provider
            // (RELIABILITY I2): back off and ask again with the same key, never dead-letter.
            let mut e = ProviderError::new(
                ErrorClass::Transient,
                "in_progress",
                "the provider is still executing a request with this idempotency key",
            );
            e.http_status = Some(409);
            e.retry_after = exchange
                .headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            return Err(e);
        }
        classify_with(
            &self.errors,
            exchange.status,
            &exchange.headers,
            &exchange.body,
            SystemTime::now(),
        )?;
        // From here the provider said yes: an answer we cannot read leaves the outcome unknown.
        let json: Value = if exchange.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&exchange.body).map_err(|e| {
                ProviderError::unreadable_answer(format!("the 2xx answer is not JSON: {e}"))
            })?
        };
        let reference = shape.reference(&json);
        let reading = match shape.reading(&json)? {
            Some(r) => r,
            None if exchange.status == StatusCode::ACCEPTED => Reading::Pending,
            None => Reading::Succeeded,
        };
        match reading {
            Reading::Pending => {
                let reference = reference.ok_or_else(|| {
                    ProviderError::unreadable_answer(
                        "accepted work without a usable reference in the answer",
                    )
                })?;
                Ok(ProviderOutcome::Waiting { reference })
            }
            Reading::Succeeded => Ok(ProviderOutcome::Completed {
                result: shape.result(&json),
                reference,
            }),
            Reading::Failed => {
                let mut e = ProviderError::new(
                    ErrorClass::Permanent,
                    "provider_failed",
                    "the provider answered that the operation failed",
                );
                e.http_status = Some(exchange.status.as_u16());
                Err(e)
            }
        }
    }

    fn idempotent(&self) -> bool {
        self.idempotent
    }

    fn completion(&self) -> Completion {
        if self.status_path.is_some() {
            Completion::Poll
        } else {
            Completion::Callback
        }
    }

    async fn check(
        &self,
        call: &ProviderCall,
        reference: &str,
    ) -> Result<CallbackOutcome, ProviderError> {
        let Some(path) = &self.status_path else {
            return Err(ProviderError::no_status_checks(&self.name));
        };
        if reference.chars().all(|c| c == '.') {
            return Err(invalid_response(
                "the provider reference is not a path segment",
            ));
        }
        let segment = percent_encoding::utf8_percent_encode(reference, PATH_SEGMENT).to_string();
        let url = self
            .base_url
            .join(&path.replace(REFERENCE_PLACEHOLDER, &segment))
            .map_err(|e| invalid_response(format!("cannot build the status URL: {e}")))?;
        let exchange = self
            .send(
                OutboundRequest {
                    method: Method::GET,
                    url,
                    headers: self.headers(call),
                    body: Bytes::new(),
                    timeout: None,
                },
                call,
            )
            .await?;
        classify_with(
            &self.errors,
            exchange.status,
            &exchange.headers,
            &exchange.body,
            SystemTime::now(),
        )?;
        let shape = self.shape(call.command.operation.as_str());
        if shape.status.is_none() {
            let (answered, outcome) = parse_report(&exchange.body, &self.redactor)
                .map_err(|e| invalid_response(format!("status answer is not a report: {e}")))?;
            if answered != reference {
                return Err(invalid_response(
                    "the status answer is about another reference",
                ));
            }
            return Ok(outcome);
        }
        // The operation declares its status field: the status answer is read the same way.
        let json: Value = serde_json::from_slice(&exchange.body)
            .map_err(|e| invalid_response(format!("status answer is not JSON: {e}")))?;
        Ok(match shape.reading(&json)? {
            Some(Reading::Succeeded) => CallbackOutcome::Succeeded {
                result: self.redactor.redacted(shape.result(&json)),
            },
            Some(Reading::Failed) => CallbackOutcome::Failed {
                error: ErrorInfo::new(
                    ErrorClass::Permanent,
                    "provider_failed",
                    "the provider reported a failure",
                ),
            },
            Some(Reading::Pending) | None => CallbackOutcome::Pending,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_config::Config;

    fn entry(secret_text: &str) -> (Config, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("sy-secret-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, secret_text).unwrap();
        let toml = format!(
            "[[providers]]\nname = \"acme\"\nkind = \"shipping\"\ntype = \"http\"\n\
             base_url = \"https://ship.acme.example/api\"\noperations = [\"create_label\"]\n\
             webhook_secret_file = \"{}\"\n",
            path.display()
        );
        (Config::from_toml_str(&toml).unwrap(), path)
    }

    fn signed(secret: &str, body: &[u8], now: i64) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", HeaderValue::from_static("msg_1"));
        h.insert(
            "webhook-timestamp",
            HeaderValue::from_str(&now.to_string()).unwrap(),
        );
        let sig = StandardWebhooks::new(secret)
            .unwrap()
            .sign("msg_1", now, body);
        h.insert("webhook-signature", HeaderValue::from_str(&sig).unwrap());
        h
    }

    #[test]
    fn a_rotated_secret_verifies_deliveries_signed_with_the_old_or_the_new_key() {
        let (old, new) = (
            StandardWebhooks::generate_secret(),
            StandardWebhooks::generate_secret(),
        );
        let (config, path) = entry(&format!("{new}\n{old}\n"));
        let receiver = GenericHttpProvider::receiver(&config.providers[0], 0, &Redactor::default())
            .unwrap()
            .unwrap();
        let body = br#"{"reference":"r1","status":"succeeded","result":{"ok":true}}"#;
        let now = 1_700_000_000;
        for secret in [&old, &new] {
            let notice = receiver
                .receive(&signed(secret, body, now), body, now)
                .unwrap()
                .unwrap();
            assert_eq!(
                (notice.id.as_str(), notice.reference.as_str()),
                ("msg_1", "r1")
            );
        }
        let other = StandardWebhooks::generate_secret();
        assert!(
            receiver
                .receive(&signed(&other, body, now), body, now)
                .is_err()
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn an_empty_or_malformed_secret_names_its_key() {
        for text in ["  \n", "whsec_!!!"] {
            let (config, path) = entry(text);
            let err = GenericHttpProvider::receiver(&config.providers[0], 0, &Redactor::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("providers[0].webhook_secret_file"), "{err}");
            std::fs::remove_file(path).unwrap();
        }
    }
}
