//! Settings for one sandbox instance.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// How a [`Sandbox`](crate::Sandbox) listens and misbehaves.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Address to bind; port 0 picks a free port (the default, so tests run in parallel).
    pub listen: SocketAddr,
    /// Directory where `ca.pem` is written for clients to trust; created if missing.
    pub cert_dir: PathBuf,
    /// Delay added before every provider request, to emulate a remote provider.
    pub latency: Duration,
    /// Probability (0..=1) that a provider request without a scenario gets a 503, unexecuted.
    pub failure_rate: f64,
    /// When set, provider endpoints require `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// Where accepted operations are reported finished, signed per Standard Webhooks.
    pub webhooks: Option<WebhookTarget>,
    /// How long an accepted operation runs before it finishes: its callback is sent then,
    /// and its status answers turn terminal.
    pub operation_time: Duration,
}

/// The receiver of the sandbox's callbacks.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    /// The base URL; the provider's name is appended, e.g. `http://127.0.0.1:8080/v1/webhooks/`.
    pub base_url: String,
    /// The Standard Webhooks secret (`whsec_...`) the receiver verifies with.
    pub secret: String,
}

impl SandboxConfig {
    /// Defaults: `127.0.0.1:0`, no latency, no random failures, no auth, no callbacks,
    /// accepted operations finishing after 500 ms.
    pub fn new(cert_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            cert_dir: cert_dir.into(),
            latency: Duration::ZERO,
            failure_rate: 0.0,
            bearer_token: None,
            webhooks: None,
            operation_time: Duration::from_millis(500),
        }
    }

    /// Rejects settings that would misbehave later (a NaN rate, an empty token).
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        if !(0.0..=1.0).contains(&self.failure_rate) {
            anyhow::bail!(
                "failure_rate must be within 0..=1, got {}",
                self.failure_rate
            );
        }
        if let Some(w) = &self.webhooks {
            switchyard_webhooks::StandardWebhooks::new(&w.secret)
                .map_err(|e| anyhow::anyhow!("webhook secret: {e}"))?;
        }
        if self.bearer_token.as_deref().is_some_and(str::is_empty) {
            anyhow::bail!("bearer_token must not be empty when set");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_quiet_and_random_port() {
        let config = SandboxConfig::new("/tmp/x");
        assert_eq!(config.listen.port(), 0);
        assert!(config.listen.ip().is_loopback());
        assert_eq!(config.latency, Duration::ZERO);
        assert_eq!(config.failure_rate, 0.0);
        assert!(config.bearer_token.is_none());
        assert!(config.validate().is_ok());
    }

    #[test]
    fn rejects_bad_rates_and_empty_tokens() {
        let mut config = SandboxConfig::new("/tmp/x");
        for rate in [f64::NAN, -0.1, 1.5] {
            config.failure_rate = rate;
            assert!(config.validate().is_err(), "rate {rate} accepted");
        }
        config.failure_rate = 1.0;
        config.bearer_token = Some(String::new());
        assert!(config.validate().is_err());
    }
}
