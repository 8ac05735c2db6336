//! One supervised broker connection per process.
//!
//! A supervisor task connects, declares the topology and publishes the live [`Session`]; when
//! the connection dies it reconnects with capped, jittered exponential backoff and declares the
//! topology again. Consumers and publishers ask for the current session and open their channels
//! on it, so recovery needs no process restart. We supervise ourselves rather than use lapin's
//! experimental auto-recovery because recovery must re-declare the topology and flip readiness,
//! and both must be observable and tested.
//!
//! Given the addresses of a cluster's nodes, the supervisor starts at a random one (so a fleet
//! spreads over the nodes) and, when a connection is refused or lost, moves on to the next;
//! the backoff waits only after a whole round of them failed.

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
    /// AMQP URL, or the URLs of a cluster's nodes separated by commas (may contain passwords:
    /// never logged; a comma inside one URL is written `%2C`).
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
            url: config
                .broker_urls()
                .iter()
                .map(|u| u.expose().replace(',', "%2C"))
                .collect::<Vec<_>>()
                .join(","),
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
    /// The `host:port` of the node connected to (never the URL, which holds a password).
    pub node: String,
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
        let nodes = parse_nodes(&settings.url, settings.heartbeat_secs)?;
        let rotation = Rotation::anywhere(nodes.len());
        let (tx, rx) = watch::channel(State::Down);
        let shutdown = CancellationToken::new();
        let topology = Arc::new(topology);
        tokio::spawn(supervise(
            nodes,
            rotation,
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

/// One broker address, parsed, with the `host:port` that logs may show.
#[derive(Debug, Clone)]
struct Node {
    uri: AMQPUri,
    shown: String,
}

/// The largest frame proposed to the broker unless the URL names one (`?frame_max=`). lapin
/// keeps a send and a receive buffer of 32 frames each for every connection, rings that every
/// page of ends up resident: at the broker's 128 KiB that is 8 MiB per connection, at 16 KiB
/// 1 MiB. Our commands, events and attempt records are a few KiB, one frame each; a larger
/// body travels as several frames, at 8 bytes each.
const FRAME_MAX: u32 = 16 * 1024;

/// The nodes of `list` (one URL, or several separated by commas), each given the heartbeat and
/// a connect timeout. Errors name the address by position, never by its text.
fn parse_nodes(list: &str, heartbeat_secs: u16) -> Result<Vec<Node>, InvalidUrl> {
    let parts: Vec<&str> = list.split(',').map(str::trim).collect();
    let total = parts.len();
    let which = |i: usize| {
        if total == 1 {
            String::new()
        } else {
            format!("address {} of {total}: ", i + 1)
        }
    };
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            if part.is_empty() {
                return Err(InvalidUrl(format!("{}empty", which(i))));
            }
            let mut uri: AMQPUri = part
                .parse()
                .map_err(|e: String| InvalidUrl(format!("{}{e}", which(i))))?;
            uri.query.heartbeat = Some(heartbeat_secs);
            uri.query.connection_timeout = Some(5_000);
            uri.query.frame_max.get_or_insert(FRAME_MAX);
            let shown = format!("{}:{}", uri.authority.host, uri.authority.port);
            Ok(Node { uri, shown })
        })
        .collect()
}

/// Which node to try next. Pure, so the order is unit-tested without a broker.
#[derive(Debug, Clone)]
struct Rotation {
    len: usize,
    current: usize,
    /// Nodes that failed in a row since the last connection (or the start).
    failed_in_round: usize,
}

impl Rotation {
    fn new(len: usize, start: usize) -> Self {
        let len = len.max(1);
        Self {
            len,
            current: start % len,
            failed_in_round: 0,
        }
    }

    /// Starts at a random node, so the processes of a fleet spread over the cluster.
    fn anywhere(len: usize) -> Self {
        Self::new(len, rand::rng().random_range(0..len.max(1)))
    }

    /// The node to try now.
    fn current(&self) -> usize {
        self.current
    }

    /// The current node refused us: move on. True when every node failed in a row, the
    /// moment to back off before the next round.
    fn failed(&mut self) -> bool {
        self.current = (self.current + 1) % self.len;
        self.failed_in_round += 1;
        if self.failed_in_round >= self.len {
            self.failed_in_round = 0;
            true
        } else {
            false
        }
    }

    /// Connected to the current node: a new round starts whenever it is lost.
    fn connected(&mut self) {
        self.failed_in_round = 0;
    }

    /// The connection to the current node was lost: the next node is tried first, since
    /// this one may be gone; it is tried again last in the round.
    fn lost(&mut self) {
        self.current = (self.current + 1) % self.len;
        self.failed_in_round = 0;
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
    node: &Node,
    settings: &BrokerSettings,
    topology: &Topology,
) -> Result<Connection, lapin::Error> {
    let props = ConnectionProperties::default()
        .with_connection_name(settings.connection_name.clone().into());
    let conn = Connection::connect_uri(node.uri.clone(), props).await?;
    let ch = conn.create_channel().await?;
    topology.declare(&ch).await?;
    let _ = ch.close(200, "topology declared".into()).await;
    Ok(conn)
}

async fn supervise(
    nodes: Vec<Node>,
    mut rotation: Rotation,
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
        let Some(node) = nodes.get(rotation.current()) else {
            break;
        };
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = connect(node, &settings, &topology) => r,
        };
        let conn = match attempt {
            Ok(c) => c,
            Err(e) => {
                metrics::counter!("switchyard_broker_connect_failures_total").increment(1);
                if !rotation.failed() {
                    warn!(error = %e, node = %node.shown, "broker connection failed, trying the next node");
                    continue;
                }
                failures = failures.saturating_add(1);
                let wait = backoff(failures, base, settings.reconnect_max);
                warn!(error = %e, node = %node.shown, retry_in_ms = wait.as_millis() as u64, "broker connection failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
        };
        failures = 0;
        rotation.connected();
        generation += 1;
        let mut events = conn.events_listener();
        let session = Arc::new(Session {
            connection: conn,
            generation,
            node: node.shown.clone(),
        });
        info!(generation, node = %node.shown, "broker connected, topology declared");
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
        rotation.lost();
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

    #[test]
    fn a_list_of_addresses_parses_and_errors_never_quote_it() {
        let nodes = parse_nodes(
            "amqp://u:p@127.0.0.1:5681/%2f, amqp://u:p@127.0.0.1:5682/%2f,amqps://u:p@broker.example/v",
            7,
        )
        .unwrap();
        let shown: Vec<_> = nodes.iter().map(|n| n.shown.as_str()).collect();
        assert_eq!(
            shown,
            ["127.0.0.1:5681", "127.0.0.1:5682", "broker.example:5671"]
        );
        assert!(nodes.iter().all(|n| n.uri.query.heartbeat == Some(7)));
        assert!(
            nodes
                .iter()
                .all(|n| n.uri.query.frame_max == Some(FRAME_MAX))
        );
        // A frame size in the URL is the operator's and stays.
        let n = parse_nodes("amqp://u:p@h:1/x?frame_max=131072", 10).unwrap();
        assert_eq!(n[0].uri.query.frame_max, Some(131_072));
        assert_eq!(nodes[2].uri.vhost, "v");
        // One URL is a list of one.
        assert_eq!(parse_nodes("amqp://u:p@h:1/x", 10).unwrap().len(), 1);
        // A comma inside a password travels as %2C.
        let n = parse_nodes("amqp://u:a%2Cb@h:1/x,amqp://u:p@h:2/x", 10).unwrap();
        assert_eq!(n[0].uri.authority.userinfo.password, "a,b");

        let e = parse_nodes("amqp://u:CANARY@h:1/x,,amqp://u:CANARY@h:2/x", 10).unwrap_err();
        assert_eq!(e.to_string(), "invalid broker URL: address 2 of 3: empty");
        let e = parse_nodes("amqp://u:CANARY@h:1/x,http://u:CANARY@h:2/x", 10).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid broker URL: address 2 of 2: "),
            "{e}"
        );
        assert!(!e.to_string().contains("CANARY"), "{e}");
    }

    #[test]
    fn from_config_hands_on_every_address() {
        let config = switchyard_config::AmqpConfig {
            urls: vec![
                switchyard_core::Secret::new("amqp://u:a,b@h:1/x".to_owned()),
                switchyard_core::Secret::new("amqp://u:p@h:2/x".to_owned()),
            ],
            ..Default::default()
        };
        let settings = BrokerSettings::from_config(&config, "t");
        let nodes = parse_nodes(&settings.url, 10).unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].uri.authority.userinfo.password, "a,b");
        assert!(!format!("{settings:?}").contains("a,b"));
    }

    #[test]
    fn the_rotation_moves_on_and_backs_off_after_a_full_round() {
        let mut r = Rotation::new(3, 1);
        assert_eq!(r.current(), 1);
        // Refused by 1 and 2: the next node at once; refused by 0 as well: back off.
        assert!(!r.failed());
        assert_eq!(r.current(), 2);
        assert!(!r.failed());
        assert_eq!(r.current(), 0);
        assert!(r.failed());
        assert_eq!(r.current(), 1, "the next round starts where the first did");
        // Connected to 1, then lost it: 2 is tried first, and 1 only last.
        r.connected();
        r.lost();
        assert_eq!(r.current(), 2);
        assert!(!r.failed());
        assert_eq!(r.current(), 0);
        assert!(!r.failed());
        assert_eq!(r.current(), 1);
        assert!(r.failed(), "the whole round failed");
        // A failure count left over from before a connection does not shorten the next round.
        let mut r = Rotation::new(3, 0);
        assert!(!r.failed());
        r.connected();
        r.lost();
        assert!(!r.failed());
        assert!(!r.failed());
        assert!(r.failed());
    }

    #[test]
    fn one_address_backs_off_after_every_failure() {
        let mut r = Rotation::new(1, 5);
        assert_eq!(r.current(), 0);
        for _ in 0..3 {
            assert!(r.failed());
            assert_eq!(r.current(), 0);
        }
        r.lost();
        assert_eq!(r.current(), 0);
    }

    #[test]
    fn the_start_spreads_over_the_nodes() {
        let starts: std::collections::HashSet<usize> =
            (0..200).map(|_| Rotation::anywhere(3).current()).collect();
        assert_eq!(starts.len(), 3);
        assert_eq!(Rotation::anywhere(1).current(), 0);
    }
}
