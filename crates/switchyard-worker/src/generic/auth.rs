//! How a generic provider authenticates: bearer, Basic, an API key in a header or the query,
//! or OAuth2 client credentials. Secrets come from an environment variable or a file; a file
//! is read again when it changes, so a rotated secret is used without a restart.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Method};
use serde::Deserialize;
use switchyard_config::ConfigError;
use switchyard_core::{ErrorClass, ProviderError, Secret};
use switchyard_http::{OutboundClient, OutboundRequest, classify, validate_provider_url};
use url::Url;

use crate::secrets::env_secret;

/// A provider's `auth` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token's environment variable.
        #[serde(default)]
        token_env: Option<String>,
        /// Or its file.
        #[serde(default)]
        token_file: Option<PathBuf>,
    },
    /// `Authorization: Basic base64(username:password)`.
    Basic {
        /// The user name (an account id, not a secret), inline.
        #[serde(default)]
        username: Option<String>,
        /// Or from an environment variable.
        #[serde(default)]
        username_env: Option<String>,
        /// The password's environment variable.
        #[serde(default)]
        password_env: Option<String>,
        /// Or its file.
        #[serde(default)]
        password_file: Option<PathBuf>,
    },
    /// An API key in a named header or query parameter.
    ApiKey {
        /// The header carrying it, e.g. `X-API-Key`.
        #[serde(default)]
        header: Option<String>,
        /// Or the query parameter.
        #[serde(default)]
        query: Option<String>,
        /// The key's environment variable.
        #[serde(default)]
        value_env: Option<String>,
        /// Or its file.
        #[serde(default)]
        value_file: Option<PathBuf>,
    },
    /// OAuth2 client credentials (RFC 6749 section 4.4).
    Oauth2 {
        /// The token endpoint (https).
        token_url: String,
        /// The client id, inline.
        #[serde(default)]
        client_id: Option<String>,
        /// Or from an environment variable.
        #[serde(default)]
        client_id_env: Option<String>,
        /// The client secret's environment variable.
        #[serde(default)]
        client_secret_env: Option<String>,
        /// Or its file.
        #[serde(default)]
        client_secret_file: Option<PathBuf>,
        /// Scopes asked for, space-separated.
        #[serde(default)]
        scope: Option<String>,
        /// Where the client credentials go: `basic` (the default, RFC 6749's preferred way)
        /// or `body`.
        #[serde(default)]
        credentials: CredentialsIn,
    },
}

/// Where OAuth2 client credentials are sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialsIn {
    /// HTTP Basic.
    #[default]
    Basic,
    /// `client_id` and `client_secret` form fields.
    Body,
}

/// A secret from an environment variable (fixed for the process's life) or a file (read
/// again whenever its modification time changes).
#[derive(Debug)]
pub enum SecretSource {
    /// From the environment, read at start.
    Fixed(Arc<Secret<String>>),
    /// From a file.
    File {
        /// Where it is.
        path: PathBuf,
        /// The last read and the file's modification time then.
        cache: Mutex<(Option<SystemTime>, Arc<Secret<String>>)>,
    },
}

impl SecretSource {
    /// From `{field}_env` or `{field}_file` of `key`: exactly one, non-empty.
    pub fn load(
        key: &str,
        field: &str,
        env: Option<&str>,
        file: Option<&PathBuf>,
    ) -> Result<Self, ConfigError> {
        match (env, file) {
            (Some(var), None) => Ok(Self::Fixed(Arc::new(env_secret(
                &format!("{key}.{field}_env"),
                var,
            )?))),
            (None, Some(path)) => {
                let (modified, secret) = read_secret(path)
                    .map_err(|e| ConfigError::invalid(format!("{key}.{field}_file"), e))?;
                Ok(Self::File {
                    path: path.clone(),
                    cache: Mutex::new((modified, Arc::new(secret))),
                })
            }
            (Some(_), Some(_)) => Err(ConfigError::invalid(
                format!("{key}.{field}_file"),
                format!("set {field}_env or {field}_file, not both"),
            )),
            (None, None) => Err(ConfigError::invalid(
                format!("{key}.{field}_env"),
                format!("set {field}_env or {field}_file"),
            )),
        }
    }

    /// The current value. A file that cannot be read now keeps the last value (a rotation
    /// writes a new file; an unreadable moment must not fail calls).
    pub fn get(&self) -> Arc<Secret<String>> {
        match self {
            Self::Fixed(s) => s.clone(),
            Self::File { path, cache } => {
                let mut cache = cache
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
                if modified.is_some()
                    && modified != cache.0
                    && let Ok((m, s)) = read_secret(path)
                {
                    *cache = (m, Arc::new(s));
                }
                cache.1.clone()
            }
        }
    }
}

fn read_secret(path: &PathBuf) -> Result<(Option<SystemTime>, Secret<String>), String> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok((modified, Secret::new(text.to_owned())))
}

/// How requests are authenticated.
#[derive(Debug)]
pub enum Auth {
    /// None.
    None,
    /// A bearer token.
    Bearer(SecretSource),
    /// Basic.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: SecretSource,
    },
    /// A key in a header.
    HeaderKey(HeaderName, SecretSource),
    /// A key in the query.
    QueryKey(String, SecretSource),
    /// OAuth2 client credentials.
    OAuth2(Arc<OAuth2>),
}

/// The credential a request went out with: after a 401, an OAuth2 token is dropped only if
/// it is still the cached one (another call may have refreshed it already).
#[derive(Debug, Clone)]
pub struct Used(Option<Arc<Secret<String>>>);

fn inline_or_env(
    key: &str,
    field: &str,
    inline: Option<&String>,
    env: Option<&str>,
) -> Result<String, ConfigError> {
    match (inline, env) {
        (Some(v), None) if !v.is_empty() => Ok(v.clone()),
        (None, Some(var)) => Ok(env_secret(&format!("{key}.{field}_env"), var)?
            .expose()
            .clone()),
        _ => Err(ConfigError::invalid(
            format!("{key}.{field}"),
            format!("set {field} or {field}_env (one of them)"),
        )),
    }
}

impl Auth {
    /// Builds it from the entry's `auth` (or its older `bearer_token_env`); `key` is the
    /// entry's config key.
    pub fn build(
        key: &str,
        config: Option<&AuthConfig>,
        bearer_token_env: Option<&str>,
        client: &OutboundClient,
    ) -> Result<Self, ConfigError> {
        let key = &format!("{key}.auth");
        Ok(match (config, bearer_token_env) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    key.clone(),
                    "set auth or bearer_token_env, not both",
                ));
            }
            (None, Some(var)) => Self::Bearer(SecretSource::Fixed(Arc::new(env_secret(
                &format!("{}.bearer_token_env", key.trim_end_matches(".auth")),
                var,
            )?))),
            (None, None) => Self::None,
            (
                Some(AuthConfig::Bearer {
                    token_env,
                    token_file,
                }),
                None,
            ) => Self::Bearer(SecretSource::load(
                key,
                "token",
                token_env.as_deref(),
                token_file.as_ref(),
            )?),
            (
                Some(AuthConfig::Basic {
                    username,
                    username_env,
                    password_env,
                    password_file,
                }),
                None,
            ) => Self::Basic {
                username: inline_or_env(
                    key,
                    "username",
                    username.as_ref(),
                    username_env.as_deref(),
                )?,
                password: SecretSource::load(
                    key,
                    "password",
                    password_env.as_deref(),
                    password_file.as_ref(),
                )?,
            },
            (
                Some(AuthConfig::ApiKey {
                    header,
                    query,
                    value_env,
                    value_file,
                }),
                None,
            ) => {
                let value =
                    SecretSource::load(key, "value", value_env.as_deref(), value_file.as_ref())?;
                match (header, query) {
                    (Some(h), None) => Self::HeaderKey(
                        HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                            ConfigError::invalid(
                                format!("{key}.header"),
                                format!("{h:?} is not a header name"),
                            )
                        })?,
                        value,
                    ),
                    (None, Some(q)) if !q.is_empty() => Self::QueryKey(q.clone(), value),
                    _ => {
                        return Err(ConfigError::invalid(
                            key.clone(),
                            "an api_key sets header or query (one of them)",
                        ));
                    }
                }
            }
            (
                Some(AuthConfig::Oauth2 {
                    token_url,
                    client_id,
                    client_id_env,
                    client_secret_env,
                    client_secret_file,
                    scope,
                    credentials,
                }),
                None,
            ) => Self::OAuth2(Arc::new(OAuth2 {
                token_url: validate_provider_url(&format!("{key}.token_url"), token_url)
                    .map_err(|e| ConfigError::invalid(format!("{key}.token_url"), e.to_string()))?,
                client_id: inline_or_env(
                    key,
                    "client_id",
                    client_id.as_ref(),
                    client_id_env.as_deref(),
                )?,
                client_secret: SecretSource::load(
                    key,
                    "client_secret",
                    client_secret_env.as_deref(),
                    client_secret_file.as_ref(),
                )?,
                scope: scope.clone(),
                credentials: *credentials,
                client: client.clone(),
                token: tokio::sync::Mutex::new(None),
                requests: AtomicU64::new(0),
            })),
        })
    }

    /// Adds the credential to a request; an OAuth2 token is fetched first when none is
    /// cached or it is about to expire.
    pub async fn apply(&self, request: &mut OutboundRequest) -> Result<Used, ProviderError> {
        let sensitive = |text: String| {
            HeaderValue::from_str(&text).map(|mut v| {
                v.set_sensitive(true);
                v
            })
        };
        let bad = |_| {
            ProviderError::new(
                ErrorClass::Permanent,
                "request",
                "the credential is not a valid header value",
            )
        };
        match self {
            Self::None => Ok(Used(None)),
            Self::Bearer(token) => {
                let v = sensitive(format!("Bearer {}", token.get().expose())).map_err(bad)?;
                request.headers.insert(AUTHORIZATION, v);
                Ok(Used(None))
            }
            Self::Basic { username, password } => {
                let v = sensitive(basic(username, password.get().expose())).map_err(bad)?;
                request.headers.insert(AUTHORIZATION, v);
                Ok(Used(None))
            }
            Self::HeaderKey(name, value) => {
                let v = sensitive(value.get().expose().clone()).map_err(bad)?;
                request.headers.insert(name.clone(), v);
                Ok(Used(None))
            }
            Self::QueryKey(name, value) => {
                request
                    .url
                    .query_pairs_mut()
                    .append_pair(name, value.get().expose());
                Ok(Used(None))
            }
            Self::OAuth2(o) => {
                let token = o.token().await?;
                let v = sensitive(format!("Bearer {}", token.expose())).map_err(bad)?;
                request.headers.insert(AUTHORIZATION, v);
                Ok(Used(Some(token)))
            }
        }
    }

    /// After a 401: whether to try once more, having dropped the token that was refused.
    pub async fn refused(&self, used: &Used) -> bool {
        match (self, &used.0) {
            (Self::OAuth2(o), Some(token)) => {
                o.forget(token).await;
                true
            }
            _ => false,
        }
    }

    /// The query parameter an API key rides in, which must not be recorded.
    pub fn query_key(&self) -> Option<&str> {
        match self {
            Self::QueryKey(name, _) => Some(name),
            _ => None,
        }
    }

    /// A line describing it, for `providers explain` (never a secret).
    pub fn describe(&self) -> String {
        match self {
            Self::None => "none".into(),
            Self::Bearer(_) => "Authorization: Bearer <token>".into(),
            Self::Basic { username, .. } => format!("Authorization: Basic {username}:<password>"),
            Self::HeaderKey(h, _) => format!("{h}: <key>"),
            Self::QueryKey(q, _) => format!("?{q}=<key>"),
            Self::OAuth2(o) => format!(
                "OAuth2 client credentials from {} (client {}), token cached until shortly before it expires",
                o.token_url, o.client_id
            ),
        }
    }

    /// Token requests made so far (OAuth2), for tests and metrics.
    pub fn token_requests(&self) -> u64 {
        match self {
            Self::OAuth2(o) => o.requests.load(Ordering::Relaxed),
            _ => 0,
        }
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A token is renewed this long before the provider says it expires, so no request goes out
/// with a token that expires on the way.
const EARLY_RENEWAL: Duration = Duration::from_secs(60);

/// OAuth2 client credentials with one cached token. Concurrent calls that find no valid token
/// wait on one request to the token endpoint.
#[derive(Debug)]
pub struct OAuth2 {
    token_url: Url,
    client_id: String,
    client_secret: SecretSource,
    scope: Option<String>,
    credentials: CredentialsIn,
    client: OutboundClient,
    token: tokio::sync::Mutex<Option<(Arc<Secret<String>>, Instant)>>,
    requests: AtomicU64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl OAuth2 {
    async fn token(&self) -> Result<Arc<Secret<String>>, ProviderError> {
        let mut cached = self.token.lock().await;
        if let Some((token, until)) = &*cached
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let (token, lifetime) = self.fetch().await?;
        let until = Instant::now() + lifetime.saturating_sub(EARLY_RENEWAL).max(lifetime / 2);
        *cached = Some((token.clone(), until));
        Ok(token)
    }

    async fn forget(&self, refused: &Arc<Secret<String>>) {
        let mut cached = self.token.lock().await;
        if cached
            .as_ref()
            .is_some_and(|(t, _)| Arc::ptr_eq(t, refused))
        {
            *cached = None;
        }
    }

    /// Asks the token endpoint. Its failures are classified like a provider's, with codes of
    /// their own: a refused client is permanent (`oauth2_invalid_client`), an unavailable
    /// endpoint transient; no operation was attempted either way.
    async fn fetch(&self) -> Result<(Arc<Secret<String>>, Duration), ProviderError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let secret = self.client_secret.get();
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let body = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            if let Some(scope) = &self.scope {
                form.append_pair("scope", scope);
            }
            match self.credentials {
                CredentialsIn::Basic => {
                    let mut v = HeaderValue::from_str(&basic(&self.client_id, secret.expose()))
                        .map_err(|_| {
                            ProviderError::new(
                                ErrorClass::Permanent,
                                "oauth2_request",
                                "the client credentials are not a valid header value",
                            )
                        })?;
                    v.set_sensitive(true);
                    headers.insert(AUTHORIZATION, v);
                }
                CredentialsIn::Body => {
                    form.append_pair("client_id", &self.client_id);
                    form.append_pair("client_secret", secret.expose());
                }
            }
            form.finish()
        };
        let mut request = OutboundRequest::new(Method::POST, self.token_url.clone());
        request.headers = headers;
        request.body = Bytes::from(body);
        let exchange = self.client.send(request).await.map_err(|mut e| {
            e.code = format!("oauth2_{}", e.code);
            e.message = format!("token endpoint: {}", e.message);
            // Nothing reached the provider's API: a lost token answer is safe to retry.
            if e.class == ErrorClass::Timeout || e.class == ErrorClass::Unknown {
                e.class = ErrorClass::Transient;
            }
            e
        })?;
        if let Err(mut e) = classify(exchange.status, &exchange.headers, &exchange.body) {
            let error = serde_json::from_slice::<serde_json::Value>(&exchange.body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned));
            e.code = format!("oauth2_{}", error.unwrap_or_else(|| e.code.clone()));
            e.message = format!("token endpoint: {}", e.message);
            return Err(e);
        }
        let answer: TokenAnswer = serde_json::from_slice(&exchange.body).map_err(|e| {
            ProviderError::new(
                ErrorClass::Transient,
                "oauth2_unreadable",
                format!("token endpoint: the answer has no access_token: {e}"),
            )
        })?;
        Ok((
            Arc::new(Secret::new(answer.access_token)),
            Duration::from_secs(answer.expires_in.unwrap_or(3600)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_secret_file_is_used_without_a_restart() {
        let path = std::env::temp_dir().join(format!("sy-rotate-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, "first\n").unwrap();
        let source = SecretSource::load("providers[0].auth", "token", None, Some(&path)).unwrap();
        assert_eq!(source.get().expose(), "first");
        std::fs::write(&path, "second").unwrap();
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(source.get().expose(), "second");
        // A moment where the file cannot be read keeps the last value.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(source.get().expose(), "second");
    }

    #[test]
    fn secrets_must_come_from_exactly_one_place() {
        let e = SecretSource::load("providers[0].auth", "token", None, None).unwrap_err();
        assert!(e.to_string().contains("providers[0].auth.token_env"), "{e}");
        let empty = std::env::temp_dir().join(format!("sy-empty-{}", uuid::Uuid::new_v4()));
        std::fs::write(&empty, "  \n").unwrap();
        let e = SecretSource::load("providers[0].auth", "token", None, Some(&empty)).unwrap_err();
        assert!(e.to_string().contains("token_file"), "{e}");
        std::fs::remove_file(empty).unwrap();
    }
}
