//! `[[providers]]` entries: the fields every provider has, and its type-specific options.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use switchyard_core::Name;

use crate::ConfigError;
use crate::kinds::Operations;

/// One `[[providers]]` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderConfig {
    /// The `{provider}` segment of routing keys.
    pub name: Name,
    /// The integration kind it serves.
    pub kind: Name,
    /// `http` for the generic provider, or the name of a provider written in code.
    #[serde(rename = "type")]
    pub provider_type: Name,
    /// Operations offered (the generic provider needs them; code providers know their own):
    /// names, or tables declaring an operation's schema and how it is called.
    #[serde(default)]
    pub operations: Operations,
    /// Total time of one attempt; defaults to `outbound.timeout_ms`.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Connect timeout; defaults to `outbound.connect_timeout_ms`.
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    /// Attempts before a transient failure is final; defaults to `retry.max_attempts`.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Concurrent calls to this provider; defaults to `worker.concurrency`.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Requests per second to this provider (per worker process), for a vendor's rate limit;
    /// unlimited when unset.
    #[serde(default)]
    pub rate_limit_per_sec: Option<std::num::NonZeroU32>,
    /// Offer HTTP/2 to this provider (one that requires it); defaults to `outbound.http2`.
    #[serde(default)]
    pub http2: Option<bool>,
    /// An extra trust root (PEM) for this provider's certificates.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM, with any intermediates) for a provider that requires
    /// mutual TLS; with `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Everything else: options of this provider type, checked by the provider itself.
    #[serde(flatten)]
    pub options: ProviderOptions,
}

/// Type-specific options, parsed by the provider's own config struct (which denies unknown
/// keys), so adding a provider type never touches this crate.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct ProviderOptions(Map<String, Value>);

impl ProviderOptions {
    /// Parses the options into `T`, which denies keys it does not know.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_value(Value::Object(self.0.clone()))
    }
}

impl fmt::Debug for ProviderOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Options name environment variables, not secrets, but an operator may still inline
        // one: never print values of secret-looking keys.
        let mut m = f.debug_map();
        for (k, v) in &self.0 {
            let secretish = ["secret", "token", "key", "password"]
                .iter()
                .any(|s| k.contains(s) && !k.ends_with("_env"));
            if secretish {
                m.entry(k, &"[REDACTED]");
            } else {
                m.entry(k, v);
            }
        }
        m.finish()
    }
}

impl ProviderConfig {
    /// The config-key prefix of this entry in error messages.
    pub fn key(index: usize) -> String {
        format!("providers[{index}]")
    }

    /// Parses the type-specific options into `T`; errors name the entry.
    pub fn parse_options<T: DeserializeOwned>(&self, index: usize) -> Result<T, ConfigError> {
        serde_json::from_value(Value::Object(self.options.0.clone())).map_err(|e| {
            ConfigError::invalid(
                format!("{} ({} {})", Self::key(index), self.kind, self.name),
                e.to_string(),
            )
        })
    }

    pub(crate) fn validate(&self, index: usize) -> Result<(), ConfigError> {
        let key = Self::key(index);
        for (k, v) in &self.options.0 {
            if let (true, Value::String(url)) = (k.ends_with("url"), v)
                && url.to_ascii_lowercase().starts_with("http://")
            {
                return Err(ConfigError::invalid(
                    format!("{key}.{k}"),
                    format!(
                        "plain http:// is refused ({url:?}); provider URLs must be https:// \
                         (use ca_file to trust a local CA)"
                    ),
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (j, op) in self.operations.names().iter().enumerate() {
            if !names.insert(op) {
                return Err(ConfigError::invalid(
                    format!("{key}.operations[{j}]"),
                    format!("operation {:?} is listed twice", op.as_str()),
                ));
            }
        }
        for op in self.operations.declared() {
            op.schema(&format!("{key}.operations.{}", op.name))?;
        }
        let most = switchyard_core::lifecycle::MAX_ATTEMPTS_PER_RUN;
        if self.max_attempts.is_some_and(|n| n == 0 || n > most) {
            return Err(ConfigError::invalid(
                format!("{key}.max_attempts"),
                format!("must be 1 to {most}"),
            ));
        }
        if self.concurrency == Some(0) {
            return Err(ConfigError::invalid(
                format!("{key}.concurrency"),
                "must be at least 1",
            ));
        }
        if self.timeout_ms == Some(0) {
            return Err(ConfigError::invalid(
                format!("{key}.timeout_ms"),
                "must be at least 1",
            ));
        }
        match (&self.client_cert_file, &self.client_key_file) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    format!("{key}.client_cert_file"),
                    "mutual TLS needs client_cert_file and client_key_file together",
                ));
            }
            (Some(cert), Some(k)) => {
                for (name, path) in [("client_cert_file", cert), ("client_key_file", k)] {
                    if !path.exists() {
                        return Err(ConfigError::invalid(
                            format!("{key}.{name}"),
                            format!("{} does not exist", path.display()),
                        ));
                    }
                }
            }
            (None, None) => {}
        }
        if let Some(ca) = &self.ca_file
            && !ca.exists()
        {
            return Err(ConfigError::invalid(
                format!("{key}.ca_file"),
                format!("{} does not exist", ca.display()),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
// figment::Jail closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use crate::Config;
    use figment::Jail;

    const ACME: &str = r#"
[[providers]]
name = "acme"
kind = "payment"
type = "http"
base_url = "https://pay.acme.example/api"
operations = ["charge", "refund"]
bearer_token_env = "ACME_TOKEN"
timeout_ms = 10000
max_attempts = 8
"#;

    #[test]
    fn parses_the_contract_example() {
        Jail::expect_with(|_| {
            let c = Config::from_toml_str(ACME).unwrap();
            let p = &c.providers[0];
            assert_eq!(p.name.as_str(), "acme");
            assert_eq!(p.operations.len(), 2);
            assert_eq!(p.max_attempts, Some(8));
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            #[allow(dead_code)]
            struct Opts {
                base_url: String,
                bearer_token_env: Option<String>,
            }
            let o: Opts = p.parse_options(0).unwrap();
            assert_eq!(o.base_url, "https://pay.acme.example/api");
            Ok(())
        });
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        Jail::expect_with(|jail| {
            jail.create_file("client.pem", "cert")?;
            let e = Config::from_toml_str(&format!("{ACME}client_cert_file = \"client.pem\"\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("providers[0].client_cert_file"), "{e}");
            let e = Config::from_toml_str(&format!(
                "{ACME}client_cert_file = \"client.pem\"\nclient_key_file = \"missing.key\"\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(e.contains("providers[0].client_key_file"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn plain_http_is_refused_naming_the_key() {
        Jail::expect_with(|_| {
            let e = Config::from_toml_str(&ACME.replace("https://pay", "http://pay")).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("providers[0].base_url"), "{msg}");
            assert!(msg.contains("https://"), "{msg}");
            Ok(())
        });
    }
}
