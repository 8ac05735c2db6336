//! `switchyard tail`: lifecycle events as they happen, one line each (or JSON Lines).
//!
//! The tail binds its own queue on `switchyard.events` with routing-key filters built from
//! `--kind`, `--provider` and `--status` (the events' key is `{kind}.{provider}.{status}`).
//! It is the topology's "event tap": a durable queue that expires ten idle minutes after its
//! last consumer left, rather than an exclusive auto-delete one, so the tail survives broker
//! restarts and reconnects without missing the events published meanwhile, while a killed
//! tail still leaves nothing behind for long. A tail that stops normally deletes it at once.
//! `switchyard up` uses the same tail for its console.

use std::time::Duration;

use switchyard_amqp::lapin::options::{BasicAckOptions, QueueDeleteOptions};
use switchyard_amqp::{Broker, BrokerSettings, ConsumeSettings, Topology, consume};
use switchyard_config::Config;
use switchyard_core::{Event, Name, Status};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::output;

/// Which events to show. Within a field any value matches; across fields all must.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TailFilter {
    /// Only these kinds.
    pub kinds: Vec<Name>,
    /// Only these providers.
    pub providers: Vec<Name>,
    /// Only these statuses.
    pub statuses: Vec<Status>,
    /// Only this command (filtered here: ids are not in the routing key).
    pub id: Option<Uuid>,
}

/// Parses a lifecycle status.
pub fn parse_status(s: &str) -> Result<Status, String> {
    Status::ALL
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| {
            let known: Vec<&str> = Status::ALL.iter().map(|st| st.as_str()).collect();
            format!("unknown status {s:?}: expected one of {}", known.join(", "))
        })
}

impl TailFilter {
    /// The binding keys on `switchyard.events`: every combination of the given kinds,
    /// providers and statuses, `*` where none is given.
    pub fn bindings(&self) -> Vec<String> {
        fn or_any<T: ToString>(v: &[T]) -> Vec<String> {
            if v.is_empty() {
                vec!["*".to_owned()]
            } else {
                v.iter().map(ToString::to_string).collect()
            }
        }
        let statuses: Vec<&str> = self.statuses.iter().map(|s| s.as_str()).collect();
        let mut keys = Vec::new();
        for k in or_any(&self.kinds) {
            for p in or_any(&self.providers) {
                for s in or_any(&statuses) {
                    keys.push(format!("{k}.{p}.{s}"));
                }
            }
        }
        keys
    }
}

/// One line per event. The routing-key column fits the longest built-in names
/// (`notification.sandbox_oneshot.processing`); a longer one pushes the id along.
pub fn describe(e: &Event) -> String {
    let mut line = format!(
        "{}  {:<40} {}  attempt={} seq={}",
        e.occurred_at.format("%H:%M:%S%.3f"),
        e.routing_key(),
        e.command_id,
        e.attempt,
        e.seq
    );
    if let Some(r) = &e.provider_reference {
        line.push_str(&format!(" ref={r}"));
    }
    if let Some(n) = &e.next_attempt_at {
        line.push_str(&format!(" next={}", n.format("%H:%M:%S")));
    }
    if let Some(err) = &e.error {
        line.push_str(&format!(
            " error={}:{} {}",
            err.class, err.code, err.message
        ));
    }
    line
}

/// A running tail.
#[derive(Debug)]
pub struct Tail {
    broker: Broker,
    queue: String,
    stop: CancellationToken,
}

/// Starts printing the events `filter` selects (JSON Lines with `json`) until `shutdown`.
pub fn start(
    config: &Config,
    filter: TailFilter,
    json: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<Tail> {
    let queue = format!("switchyard.tail.{}", Uuid::new_v4().simple());
    let mut topology = Topology::new(config.retry.tiers.clone(), config.amqp.delivery_limit);
    for key in filter.bindings() {
        topology = topology.with_event_tap(queue.clone(), key);
    }
    let broker = Broker::start(
        BrokerSettings::from_config(&config.amqp, "switchyard-tail"),
        topology,
    )?;
    let stop = shutdown.child_token();
    let id = filter.id;
    tokio::spawn(consume(
        broker.clone(),
        ConsumeSettings {
            queue: queue.clone(),
            prefetch: 100,
            grace: Duration::from_secs(1),
        },
        stop.clone(),
        move |d| async move {
            if let Ok(e) = Event::decode(&d.data)
                && id.is_none_or(|id| id == e.command_id)
            {
                if json {
                    let _ = output::json_line(&e);
                } else {
                    output::print_line(&describe(&e));
                }
            }
            let _ = d.acker.ack(BasicAckOptions::default()).await;
        },
    ));
    Ok(Tail {
        broker,
        queue,
        stop,
    })
}

impl Tail {
    /// Waits until the tail's queue is bound (events published from then on are shown).
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        self.broker.wait_ready(timeout).await
    }

    /// Stops, deletes the tail's queue and closes the connection.
    pub async fn close(self) {
        self.stop.cancel();
        if let Some(session) = self.broker.session_within(Duration::from_secs(2)).await
            && let Ok(ch) = session.connection.create_channel().await
        {
            let _ = ch
                .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
                .await;
            let _ = ch.close(200, "tail done".into()).await;
        }
        self.broker.close().await;
    }
}

/// `switchyard tail`: runs until Ctrl-C or SIGTERM.
pub async fn run(config: &Config, filter: TailFilter, json: bool) -> anyhow::Result<()> {
    let shutdown = switchyard_telemetry::shutdown_on_signals();
    let bindings = filter.bindings();
    let tail = start(config, filter, json, shutdown.clone())?;
    if !tail.wait_ready(Duration::from_secs(10)).await {
        tail.close().await;
        anyhow::bail!(
            "cannot connect to the broker at {} (set [amqp] url or SWITCHYARD_AMQP_URL)",
            crate::connect::redact_urls(config.amqp.url.expose())
        );
    }
    output::note(format!(
        "tailing switchyard.events ({}); Ctrl-C to stop",
        bindings.join(", ")
    ));
    shutdown.cancelled().await;
    tail.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        parse(s)
    }

    fn parse(s: &str) -> Name {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn bindings_cover_every_combination() {
        assert_eq!(TailFilter::default().bindings(), vec!["*.*.*"]);
        let f = TailFilter {
            kinds: vec![name("payment")],
            statuses: vec![Status::Completed, Status::Failed],
            ..Default::default()
        };
        assert_eq!(
            f.bindings(),
            vec!["payment.*.completed", "payment.*.failed"]
        );
        let f = TailFilter {
            kinds: vec![name("payment"), name("shipping")],
            providers: vec![name("sandbox")],
            ..Default::default()
        };
        assert_eq!(
            f.bindings(),
            vec!["payment.sandbox.*", "shipping.sandbox.*"]
        );
    }

    #[test]
    fn statuses_parse() {
        assert_eq!(parse_status("waiting"), Ok(Status::Waiting));
        // Every status can be tailed, the two operators watch most included.
        assert_eq!(parse_status("unknown"), Ok(Status::Unknown));
        assert_eq!(parse_status("duplicate"), Ok(Status::Duplicate));
        assert!(parse_status("done").is_err());
    }
}
