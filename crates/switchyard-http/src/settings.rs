//! Outbound settings (S3): the limits every attempt runs under.

use std::path::PathBuf;
use std::time::Duration;

/// Settings for outbound calls (filled from config by `switchyard-config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundSettings {
    /// Time allowed to open the TCP connection and finish the TLS handshake.
    pub connect_timeout: Duration,
    /// Total time per attempt, body read included; a request may override it.
    pub timeout: Duration,
    /// The most response body bytes read; more is a permanent `response_too_large`.
    pub max_response_bytes: usize,
    /// Allow loopback destinations (tests and `switchyard up` talk to local emulators).
    pub allow_loopback: bool,
    /// Allow private, CGNAT, link-local, ULA, unspecified and other non-public destinations.
    pub allow_private: bool,
    /// Extra trust roots (PEM files), added to the webpki roots.
    pub ca_files: Vec<PathBuf>,
    /// Idle connections kept per host: reuse saves a TLS handshake per call. At least the
    /// provider's concurrency, or a busy worker closes and reopens connections.
    pub pool_max_idle_per_host: usize,
    /// Offer HTTP/2. Off by default: every call in flight then has its own HTTP/1.1
    /// connection, so a provider's HTTP/2 stream limit cannot hold calls inside the client
    /// (on the attempt's clock, past the worker's `concurrency`), and one connection's task
    /// does not carry every call's framing and TLS.
    pub http2: bool,
    /// A client certificate presented to providers that require one (mTLS).
    pub client_identity: Option<ClientIdentity>,
}

/// A client certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The certificate, then any intermediates.
    pub cert_file: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl Default for OutboundSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            timeout: Duration::from_secs(10),
            max_response_bytes: 1024 * 1024,
            allow_loopback: false,
            allow_private: false,
            ca_files: Vec::new(),
            pool_max_idle_per_host: 64,
            http2: false,
            client_identity: None,
        }
    }
}
