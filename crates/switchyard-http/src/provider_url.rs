//! Provider URL validation, run when the config is loaded so a bad URL fails start-up with
//! a message naming the config key (S1: https only).

use url::Url;

/// A provider URL that cannot be used. Every message starts with the config key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not a URL at all.
    #[error("{key}: not a valid URL: {reason}")]
    Parse {
        /// The config key, e.g. `providers[0].base_url`.
        key: String,
        /// What the parser said.
        reason: String,
    },
    /// `http://`: certificates could not be verified, so it is refused outright.
    #[error("{key}: plain http:// is refused, provider URLs must be https://")]
    PlainHttp {
        /// The config key.
        key: String,
    },
    /// Any other scheme.
    #[error("{key}: scheme {scheme}:// is refused, provider URLs must be https://")]
    Scheme {
        /// The config key.
        key: String,
        /// The scheme found.
        scheme: String,
    },
    /// `https://` without a host.
    #[error("{key}: the URL has no host")]
    NoHost {
        /// The config key.
        key: String,
    },
    /// `https://user:pass@host`: credentials belong in `*_env` settings, not in a URL that
    /// ends up in attempt records.
    #[error("{key}: credentials in the URL are refused, use the provider's secret settings")]
    Credentials {
        /// The config key.
        key: String,
    },
}

/// Parses and checks a provider URL: `https://` with a host and no embedded credentials.
pub fn validate_provider_url(key: &str, url: &str) -> Result<Url, UrlError> {
    let parsed = Url::parse(url.trim()).map_err(|e| UrlError::Parse {
        key: key.to_owned(),
        reason: e.to_string(),
    })?;
    match parsed.scheme() {
        "https" => {}
        "http" => {
            return Err(UrlError::PlainHttp {
                key: key.to_owned(),
            });
        }
        other => {
            return Err(UrlError::Scheme {
                key: key.to_owned(),
                scheme: other.to_owned(),
            });
        }
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::NoHost {
            key: key.to_owned(),
        });
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(UrlError::Credentials {
            key: key.to_owned(),
        });
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "providers[0].base_url";

    #[test]
    fn plain_http_is_refused_naming_the_key() {
        let err = validate_provider_url(KEY, "http://pay.acme.example/api").unwrap_err();
        assert_eq!(
            err.to_string(),
            "providers[0].base_url: plain http:// is refused, provider URLs must be https://"
        );
        assert!(validate_provider_url(KEY, "HTTP://pay.acme.example").is_err());
    }

    #[test]
    fn https_is_accepted() {
        let url = validate_provider_url(KEY, "https://pay.acme.example/api").unwrap();
        assert_eq!(url.as_str(), "https://pay.acme.example/api");
        let url = validate_provider_url(KEY, " https://127.0.0.1:8443/ ").unwrap();
        assert_eq!(url.port(), Some(8443));
    }

    #[test]
    fn other_schemes_are_refused() {
        for bad in [
            "ftp://acme.example/",
            "file:///etc/passwd",
            "ws://acme.example/",
        ] {
            let err = validate_provider_url(KEY, bad).unwrap_err();
            assert!(matches!(err, UrlError::Scheme { .. }), "{bad}: {err}");
            assert!(err.to_string().starts_with(KEY), "{err}");
        }
    }

    #[test]
    fn malformed_and_credentials_are_refused() {
        let err = validate_provider_url(KEY, "not a url").unwrap_err();
        assert!(matches!(err, UrlError::Parse { .. }));
        assert!(
            err.to_string()
                .starts_with("providers[0].base_url: not a valid URL")
        );

        let err =
            validate_provider_url(KEY, "https://user:sk_live_canary@acme.example/").unwrap_err();
        assert!(matches!(err, UrlError::Credentials { .. }));
        assert!(!err.to_string().contains("canary"));
    }
}
