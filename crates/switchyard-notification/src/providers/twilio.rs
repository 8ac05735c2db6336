//! `type = "twilio"`: `send_sms` through Twilio's Messages API
//! (`POST {base_url}/2010-04-01/Accounts/{account_sid}/Messages.json`, form-encoded, basic
//! auth). The `201` leaves the command `waiting` on the message SID; Twilio's delivery reports
//! to `status_callback` (this provider's `/v1/webhooks/{name}`, signed with
//! `X-Twilio-Signature`) complete it on `delivered` and fail it on `undelivered` or `failed`.
//!
//! Twilio takes no idempotency key: a retry after an answer lost in transit can send twice.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Method};
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_config::{ConfigError, ProviderConfig};
use switchyard_core::{
    CallbackOutcome, ErrorClass, ErrorInfo, Name, Provider, ProviderCall, ProviderError,
    ProviderOutcome, Secret,
};
use switchyard_http::{OutboundClient, OutboundRequest, Redactor, classify, validate_provider_url};
use switchyard_webhooks::{Notice, Receiver, Scheme, TwilioSignature, Verified, WebhookReader};
use switchyard_worker::{ProviderContext, check_operations, provider_secret};
use url::Url;

use crate::payload::SendSms;

const DEFAULT_BASE_URL: &str = "https://api.twilio.com";

/// The entry's own keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    /// Defaults to Twilio's.
    base_url: Option<String>,
    /// `AC…`: not a secret, it names the account.
    account_sid: String,
    /// Environment variable holding the auth token.
    auth_token_env: Option<String>,
    /// Or a file holding it.
    auth_token_file: Option<PathBuf>,
    /// The sender when a command names none: a number, or use `messaging_service_sid`.
    from: Option<String>,
    /// `MG…`: a Messaging Service that picks the sender.
    messaging_service_sid: Option<String>,
    /// The URL Twilio posts delivery reports to: this provider's `/v1/webhooks/{name}` as
    /// Twilio reaches it (Twilio's `StatusCallback`). The signature covers this exact URL.
    /// Not named `…_url`: it is Switchyard's own address, not a provider's, so the https-only
    /// rule for provider URLs does not apply (a local run receives on plain http).
    status_callback: String,
}

/// Sends SMS through Twilio.
#[derive(Debug, Clone)]
pub(crate) struct TwilioProvider {
    name: Name,
    operations: Vec<Name>,
    endpoint: Url,
    account_sid: String,
    auth_token: Secret<String>,
    from: Option<String>,
    messaging_service_sid: Option<String>,
    status_callback: String,
    client: OutboundClient,
    redactor: Redactor,
}

impl TwilioProvider {
    /// The provider and its delivery-report receiver.
    pub(crate) fn from_config(
        config: &ProviderConfig,
        index: usize,
        ctx: &ProviderContext,
    ) -> Result<(Self, Receiver), ConfigError> {
        let key = ProviderConfig::key(index);
        let opts: Options = config.parse_options(index)?;
        if !opts.account_sid.starts_with("AC") {
            return Err(ConfigError::invalid(
                format!("{key}.account_sid"),
                "a Twilio Account SID starts with AC",
            ));
        }
        let base = opts.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
        let base = validate_provider_url(&format!("{key}.base_url"), base)
            .map_err(|e| ConfigError::invalid(format!("{key}.base_url"), e.to_string()))?;
        let path = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            base.path().trim_end_matches('/'),
            opts.account_sid
        );
        let mut endpoint = base;
        endpoint.set_path(&path);
        Url::parse(&opts.status_callback)
            .map_err(|e| ConfigError::invalid(format!("{key}.status_callback"), e.to_string()))?;
        let Some((name, token)) = provider_secret(
            index,
            "auth_token",
            opts.auth_token_env.as_deref(),
            opts.auth_token_file.as_deref(),
        )?
        else {
            return Err(ConfigError::invalid(
                format!("{key}.auth_token_env"),
                "Twilio needs the auth token: set auth_token_env or auth_token_file",
            ));
        };
        let auth_token = Secret::new(token.expose().trim().to_owned());
        let signer = TwilioSignature::new(auth_token.expose())
            .map_err(|e| ConfigError::invalid(name, e.to_string()))?;
        check_operations(config, index, &["send_sms"])?;
        let receiver = Receiver {
            scheme: Scheme::Twilio {
                signers: vec![signer],
                url: opts.status_callback.clone(),
            },
            reader: Arc::new(StatusReader),
        };
        let provider = Self {
            name: config.name.clone(),
            operations: config.operations.names().to_vec(),
            endpoint,
            account_sid: opts.account_sid,
            auth_token,
            from: opts.from,
            messaging_service_sid: opts.messaging_service_sid,
            status_callback: opts.status_callback,
            client: ctx.client(index)?,
            redactor: ctx.redactor.clone(),
        };
        Ok((provider, receiver))
    }

    /// The form Twilio takes, in a stable order (the same bytes on every attempt).
    fn form(&self, sms: &SendSms) -> Result<String, ProviderError> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("To", &sms.to);
        match (
            sms.from.as_ref().or(self.from.as_ref()),
            &self.messaging_service_sid,
        ) {
            (Some(from), _) => form.append_pair("From", from),
            (None, Some(service)) => form.append_pair("MessagingServiceSid", service),
            (None, None) => {
                return Err(ProviderError::new(
                    ErrorClass::Invalid,
                    "no_sender",
                    "send_sms needs a from, and this provider has no default sender",
                ));
            }
        };
        form.append_pair("Body", &sms.body);
        form.append_pair("StatusCallback", &self.status_callback);
        Ok(form.finish())
    }
}

#[async_trait::async_trait]
impl Provider for TwilioProvider {
    fn name(&self) -> &Name {
        &self.name
    }

    fn operations(&self) -> &[Name] {
        &self.operations
    }

    /// Twilio takes no idempotency key: never called twice for one attempt.
    fn idempotent(&self) -> bool {
        false
    }

    async fn call(&self, call: &ProviderCall) -> Result<ProviderOutcome, ProviderError> {
        let sms: SendSms = call.payload()?;
        let body = Bytes::from(self.form(&sms)?);
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let basic = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{}:{}", self.account_sid, self.auth_token.expose()),
        );
        if let Ok(mut v) = HeaderValue::from_str(&format!("Basic {basic}")) {
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        if let Ok(v) = HeaderValue::from_str(&call.command.id.to_string()) {
            headers.insert(HeaderName::from_static("x-switchyard-command-id"), v);
        }
        let request = OutboundRequest {
            method: Method::POST,
            url: self.endpoint.clone(),
            headers,
            body,
            timeout: None,
        };
        let exchange = self
            .client
            .send_recorded(request, call, &self.redactor)
            .await?;
        classify(exchange.status, &exchange.headers, &exchange.body)?;
        let message: Value = serde_json::from_slice(&exchange.body).unwrap_or(Value::Null);
        // Twilio accepted the message: without its sid the outcome is unknown, not failed.
        let sid = message["sid"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ProviderError::unreadable_answer("Twilio's answer has no message sid")
            })?;
        Ok(ProviderOutcome::Waiting {
            reference: sid.to_owned(),
        })
    }
}

/// Reads Twilio's status callbacks.
#[derive(Debug)]
struct StatusReader;

impl WebhookReader for StatusReader {
    fn read(&self, delivery: &Verified<'_>) -> Result<Option<Notice>, String> {
        let form: std::collections::HashMap<String, String> =
            form_urlencoded::parse(delivery.body())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        let sid = form.get("MessageSid").ok_or("no MessageSid")?;
        let status = form.get("MessageStatus").ok_or("no MessageStatus")?;
        let outcome = match status.as_str() {
            "delivered" | "read" => CallbackOutcome::Succeeded {
                result: json!({"message_sid": sid, "status": status}),
            },
            "undelivered" | "failed" => {
                let code = form.get("ErrorCode").map(String::as_str).unwrap_or("none");
                CallbackOutcome::Failed {
                    error: ErrorInfo::new(
                        ErrorClass::Permanent,
                        format!("sms_{status}"),
                        format!("Twilio reported the message {status} (ErrorCode {code})"),
                    ),
                }
            }
            _ => CallbackOutcome::Pending,
        };
        // Twilio's token is the same on its retries of one report; each status is reported once.
        let id = delivery
            .header("i-twilio-idempotency-token")
            .map_or_else(|| format!("{sid}.{status}"), str::to_owned);
        Ok(Some(Notice {
            id,
            reference: sid.clone(),
            outcome,
        }))
    }
}
