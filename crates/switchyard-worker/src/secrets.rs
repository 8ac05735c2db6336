//! Secrets a `[[providers]]` entry names: `{field}_env` (an environment variable) or
//! `{field}_file` (a file, e.g. a mounted Kubernetes secret), never the value itself.

use std::path::Path;

use switchyard_config::{ConfigError, ProviderConfig};
use switchyard_core::Secret;

/// The secret of entry `index` named by `{field}_env` or `{field}_file` (at most one), with
/// the key it came from. Unset, empty or unreadable is an error naming that key: a provider
/// must not start with a secret that makes every signature meaningless.
pub fn provider_secret(
    index: usize,
    field: &str,
    env: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<(String, Secret<String>)>, ConfigError> {
    let key = ProviderConfig::key(index);
    match (env, file) {
        (Some(_), Some(_)) => Err(ConfigError::invalid(
            format!("{key}.{field}_file"),
            format!("set {field}_env or {field}_file, not both"),
        )),
        (Some(var), None) => {
            let name = format!("{key}.{field}_env");
            let secret = env_secret(&name, var)?;
            Ok(Some((name, secret)))
        }
        (None, Some(path)) => {
            let name = format!("{key}.{field}_file");
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::invalid(name.clone(), format!("{}: {e}", path.display()))
            })?;
            if text.trim().is_empty() {
                return Err(ConfigError::invalid(
                    name,
                    format!("{} is empty", path.display()),
                ));
            }
            Ok(Some((name, Secret::new(text))))
        }
        (None, None) => Ok(None),
    }
}

/// The secret in environment variable `var`, named by config key `key`; unset or empty is an
/// error naming both.
pub(crate) fn env_secret(key: &str, var: &str) -> Result<Secret<String>, ConfigError> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(Secret::new(v)),
        Ok(_) => Err(ConfigError::invalid(
            key,
            format!("environment variable {var} is empty"),
        )),
        Err(_) => Err(ConfigError::invalid(
            key,
            format!("environment variable {var} is not set"),
        )),
    }
}

/// The keys in the secret of entry `index` named by `{field}_env` or `{field}_file`: one, or
/// several separated by whitespace while a secret is rotated (a signature made with any of
/// them verifies). Each is made by `key`; one it refuses, or none at all, is an error naming
/// the config key.
pub fn provider_secrets<K, E: std::fmt::Display>(
    index: usize,
    field: &str,
    env: Option<&str>,
    file: Option<&Path>,
    key: impl Fn(&str) -> Result<K, E>,
) -> Result<Option<(String, Vec<K>)>, ConfigError> {
    let Some((name, text)) = provider_secret(index, field, env, file)? else {
        return Ok(None);
    };
    let keys = text
        .expose()
        .split_whitespace()
        .map(|secret| key(secret).map_err(|e| ConfigError::invalid(name.clone(), e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err(ConfigError::invalid(name, "the webhook secret is empty"));
    }
    Ok(Some((name, keys)))
}

/// The `base_url` of entry `index` (the vendor's own when unset), checked like every provider
/// URL and ending in `/`, so a base with a path (a proxy, a test double) keeps it when the
/// vendor's endpoints are joined onto it.
pub fn provider_base_url(
    index: usize,
    configured: Option<&str>,
    default: &str,
) -> Result<url::Url, ConfigError> {
    let key = format!("{}.base_url", ProviderConfig::key(index));
    let mut base = switchyard_http::validate_provider_url(&key, configured.unwrap_or(default))
        .map_err(|e| ConfigError::invalid(key, e.to_string()))?;
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    Ok(base)
}
