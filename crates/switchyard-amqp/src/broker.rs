//! One supervised broker connection per process.
//!
//! A supervisor task connects, declares the topology and publishes the live [`Session`]; when
//! the connection dies it reconnects with capped, jittered exponential backoff and declares the
//! topology again. Consumers and publishers ask for the current session and open their channels
//! on it, so recovery needs no process restart. We supervise ourselves rather than use lapin's
//! experimental auto-recovery because recovery must re-declare the topology and flip readiness,
//! and both must be observable and tested.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use rand::Rng;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::topology::Topology;

/// How to reach the broker.
#[derive(Clone)]
pub struct BrokerSettings {
    /// AMQP URL (may contain a password: never logged).
    pub url: String,
    /// Heartbeat interval in seconds.
    pub heartbeat_secs: u16,
    /// Upper bound of the reconnect backoff.
    pub reconnect_max: Duration,
    /// Shown in the broker's management UI.
    pub connection_name: String,
}

impl BrokerSettings {
    /// The settings of `[amqp]`, for a connection named `connection_name`.
    pub fn from_config(
        config: &switchyard_config::AmqpConfig,
        connection_name: impl Into<String>,
    ) -> Self {
        Self {
            url: config.url.expose().clone(),
            heartbeat_secs: config.heartbeat_secs,
            reconnect_max: Duration::from_millis(config.reconnect_max_ms),
            connection_name: connection_name.into(),
        }
    }
}

impl std::fmt::Debug for BrokerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerSettings")
            .field("url", &"[REDACTED]")
            .field("heartbeat_secs", &self.heartbeat_secs)
            .field("reconnect_max", &self.reconnect_max)
            .field("connection_name", &self.connection_name)
            .finish()
    }
}

/// A live connection whose topology has been declared.
#[derive(Debug)]
pub struct Session {
    /// The connection; open channels on it.
    pub connection: Connection,
    /// Increases with every reconnect, so users can tell a new session from the old one.
    pub generation: u64,
}

#[derive(Debug, Clone)]
enum State {
    Down,
    Up(Arc<Session>),
    Closed,
}

/// A handle to the supervised connection. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Broker {
    state: watch::Receiver<State>,
    shutdown: CancellationToken,
    topology: Arc<Topology>,
}

/// The broker URL cannot be parsed (the message never repeats the URL, which may hold a
/// password).
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid broker URL: {0}")]
pub struct InvalidUrl(String);

/// The broker handle was closed.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the broker connection was shut down")]
pub struct Closed;

impl Broker {
    /// Starts the supervisor. Returns at once; use [`Broker::session`] or
    /// [`Broker::wait_ready`] to wait for the first connection.
    pub fn start(settings: BrokerSettings, topology: Topology) -> Result<Self, InvalidUrl> {
        let mut uri: AMQPUri = settings.url.parse().map_err(InvalidUrl)?;
        uri.query.heartbeat = Some(settings.heartbeat_secs);
        uri.query.connection_timeout = Some(5_000);
        let (tx, rx) = watch::channel(State::Down);
        let shutdown = CancellationToken::new();
        let topology = Arc::new(topology);
        tokio::spawn(supervise(
            uri,
            settings,
            topology.clone(),
            tx,
            shutdown.clone(),
        ));
        Ok(Self {
            state: rx,
            shutdown,
            topology,
        })
    }

    /// The topology this broker declares on every (re)connect.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Whether a connection is up and the topology declared (readiness).
    pub fn is_ready(&self) -> bool {
        match &*self.state.borrow() {
            State::Up(s) => s.connection.status().connected(),
            _ => false,
        }
    }

    /// The current session, waiting for one while the broker is down.
    pub async fn session(&self) -> Result<Arc<Session>, Closed> {
        let mut rx = self.state.clone();
        loop {
            match &*rx.borrow_and_update() {
                State::Up(s) if s.connection.status().connected() => return Ok(s.clone()),
                State::Closed => return Err(Closed),
                _ => {}
            }
            if rx.changed().await.is_err() {
                return Err(Closed);
            }
        }
    }

    /// Waits up to `timeout` for a session.
    pub async fn session_within(&self, timeout: Duration) -> Option<Arc<Session>> {
        tokio::time::timeout(timeout, self.session())
            .await
            .ok()?
            .ok()
    }

    /// Waits until ready or `timeout` passes; returns readiness.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        self.session_within(timeout).await.is_some()
    }

    /// Closes the connection and stops reconnecting.
    pub async fn close(&self) {
        self.shutdown.cancel();
        let mut rx = self.state.clone();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while !matches!(&*rx.borrow_and_update(), State::Closed) {
                if rx.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
    }

    /// A token cancelled when the broker handle is closed.
    pub fn closed(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Full-jitter exponential backoff: uniform in `[base, min(cap, base * 2^n)]`.
pub(crate) fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = base
        .saturating_mul(2u32.saturating_pow(attempt.min(20)))
        .min(cap)
        .max(base);
    let ms = rand::rng().random_range(base.as_millis()..=ceiling.as_millis());
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

async fn connect(
    uri: &AMQPUri,
    settings: &BrokerSettings,
    topology: &Topology,
) -> Result<Connection, lapin::Error> {
    let props = ConnectionProperties::default()
        .with_connection_name(settings.connection_name.clone().into());
    let conn = Connection::connect_uri(uri.clone(), props).await?;
    let ch = conn.create_channel().await?;
    topology.declare(&ch).await?;
    let _ = ch.close(200, "topology declared".into()).await;
    Ok(conn)
}

async fn supervise(
    uri: AMQPUri,
    settings: BrokerSettings,
    topology: Arc<Topology>,
    tx: watch::Sender<State>,
    shutdown: CancellationToken,
) {
    let mut failures: u32 = 0;
    let mut generation: u64 = 0;
    // Both series exist from the start: an alert on them needs no first failure.
    metrics::counter!("switchyard_broker_connect_failures_total").increment(0);
    metrics::gauge!("switchyard_broker_connected").set(0.0);
    let base = Duration::from_millis(100);
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = connect(&uri, &settings, &topology) => r,
        };
        let conn = match attempt {
            Ok(c) => c,
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = backoff(failures, base, settings.reconnect_max);
                warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "broker connection failed");
                metrics::counter!("switchyard_broker_connect_failures_total").increment(1);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
        };
        failures = 0;
        generation += 1;
        let mut events = conn.events_listener();
        let session = Arc::new(Session {
            connection: conn,
            generation,
        });
        info!(generation, "broker connected, topology declared");
        metrics::gauge!("switchyard_broker_connected").set(1.0);
        tx.send_replace(State::Up(session.clone()));

        // Wait for the connection to die: an error event, or a status check as a backstop.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = events.next() => match ev {
                    Some(lapin::Event::Error(e)) => {
                        warn!(error = %e, "broker connection lost");
                        break;
                    }
                    Some(lapin::Event::ConnectionBlocked(reason)) => {
                        warn!(%reason, "broker blocked publishing");
                    }
                    Some(_) => {}
                    None => break,
                },
                _ = tick.tick() => {
                    if !session.connection.status().connected() {
                        warn!("broker connection no longer connected");
                        break;
                    }
                }
            }
        }
        metrics::gauge!("switchyard_broker_connected").set(0.0);
        tx.send_replace(State::Down);
        if shutdown.is_cancelled() {
            let _ = session.connection.close(200, "shutting down".into()).await;
            break;
        }
        let _ = session.connection.close(320, "reconnecting".into()).await;
    }
    tx.send_replace(State::Closed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        for n in 0..40 {
            let d = backoff(n, base, cap);
            assert!(d >= base && d <= cap, "{d:?}");
        }
        let distinct: std::collections::HashSet<_> =
            (0..50).map(|_| backoff(10, base, cap)).collect();
        assert!(distinct.len() > 10, "jitter spreads reconnects");
    }
}
