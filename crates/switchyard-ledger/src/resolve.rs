//! The resolver: consumes `switchyard.callbacks` and ends waiting commands.
//!
//! Wait records say what a command waits for; verified callbacks (webhooks, poll answers) and
//! expiries say how it ended. The ledger's database decides once per command which of them
//! wins, so a command gets exactly one terminal event however callbacks, retries and
//! deadlines race. A callback that overtakes its command's wait record is put back through the
//! delay tiers and tried again; nothing scans the database.

use std::time::Duration;

use chrono::Utc;
use switchyard_amqp::lapin::options::{BasicAckOptions, BasicNackOptions};
use switchyard_amqp::messages::{
    self, DEFERRALS_HEADER, command_properties, dead_letter_headers, publish_event,
};
use switchyard_amqp::topology::{CALLBACKS_QUEUE, DEAD_EXCHANGE};
use switchyard_amqp::{
    Broker, ConsumeSettings, Delivery, HeaderRead, Headers, Outgoing, PublishError, Publisher,
    consume,
};
use switchyard_core::waiting::{CALLBACK_TYPE_V1, EXPIRY_TYPE_V1, WAIT_TYPE_V1};
use switchyard_core::{Callback, ErrorClass, ErrorInfo, Event, Expiry, Status, WaitRecord};
use switchyard_telemetry::catalog::COMMANDS_TOTAL;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, info, warn};

use crate::store::{Store, StoreError};
use crate::waits::Resolution;

/// How often a message may be put back to wait for its wait record before it is given up
/// (with delay tiers of 1 s .. 1 h, about a day).
const MAX_DEFERRALS: i64 = 30;

struct Resolver {
    store: Store,
    publisher: Publisher,
    tiers: Vec<Duration>,
}

/// What became of one delivery.
enum Done {
    Ack,
    /// Not decodable: to the callbacks' dead-letter queue through the queue's own DLX.
    Reject,
    /// The store or the broker failed: try again later.
    Retry(String),
}

/// Consumes the resolver's queue until `shutdown`.
pub async fn run(
    broker: Broker,
    store: Store,
    publisher: Publisher,
    tiers: Vec<Duration>,
    shutdown: CancellationToken,
) {
    let resolver = std::sync::Arc::new(Resolver {
        store,
        publisher,
        tiers,
    });
    let stop = shutdown.clone();
    consume(
        broker,
        ConsumeSettings {
            queue: CALLBACKS_QUEUE.to_owned(),
            prefetch: 64,
            grace: Duration::from_secs(5),
        },
        shutdown,
        move |d| {
            let resolver = resolver.clone();
            let stop = stop.clone();
            async move {
                let span = switchyard_amqp::spans::process_span(&d);
                let mut again = false;
                let mut backoff = Duration::from_secs(1);
                loop {
                    match resolver.handle(&d, again).instrument(span.clone()).await {
                        Done::Ack => {
                            let _ = d.acker.ack(BasicAckOptions::default()).await;
                            return;
                        }
                        Done::Reject => {
                            let _ = d
                                .acker
                                .nack(BasicNackOptions {
                                    multiple: false,
                                    requeue: false,
                                })
                                .await;
                            return;
                        }
                        Done::Retry(error) => {
                            // Kept and handled again here, not requeued: every requeue counts
                            // against the queue's delivery limit, so a broker that stopped
                            // confirming for a few seconds parked good callbacks in
                            // switchyard.dlq.callbacks, and their commands never ended.
                            warn!(%error, retry_in = ?backoff, "resolving failed; trying again");
                            tokio::select! {
                                _ = stop.cancelled() => {
                                    crate::ingest::requeue(&d).await;
                                    return;
                                }
                                _ = tokio::time::sleep(backoff) => {}
                            }
                            backoff = (backoff * 2).min(MAX_RETRY_BACKOFF);
                            // It may have decided before failing to report: say so, so the
                            // decision is reported again (as for a redelivery).
                            again = true;
                        }
                    }
                }
            }
        },
    )
    .await;
}

/// Longest pause between two tries of a message the store or the broker failed.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(15);

impl From<StoreError> for Done {
    fn from(e: StoreError) -> Self {
        if e.is_data_fault() {
            // The same message would be refused forever: to the callbacks' dead letters now,
            // not after the delivery limit.
            warn!(error = %e, "the ledger's database refused this message: dead-lettered");
            Done::Reject
        } else {
            Done::Retry(e.to_string())
        }
    }
}

impl From<PublishError> for Done {
    fn from(e: PublishError) -> Self {
        Done::Retry(e.to_string())
    }
}

impl Resolver {
    /// `again`: this delivery was tried before and failed, perhaps after deciding.
    async fn handle(&self, d: &Delivery, again: bool) -> Done {
        let redelivered = d.redelivered || again;
        let kind = short_property(d.properties.kind());
        match kind.as_str() {
            WAIT_TYPE_V1 => match WaitRecord::decode(&d.data) {
                Ok(w) => match self.store.record_wait(&w).await {
                    Ok(()) => Done::Ack,
                    Err(e) => e.into(),
                },
                Err(e) => rejected(&kind, &e),
            },
            CALLBACK_TYPE_V1 => match Callback::decode(&d.data) {
                Ok(c) => match self.store.resolve_callback(&c, redelivered).await {
                    Ok(r) => self.settle(d, r, callback_source(d)).await,
                    Err(e) => e.into(),
                },
                Err(e) => rejected(&kind, &e),
            },
            EXPIRY_TYPE_V1 => match Expiry::decode(&d.data) {
                Ok(x) => self.expire(d, &x, redelivered).await,
                Err(e) => rejected(&kind, &e),
            },
            other => rejected(other, &"unknown message type"),
        }
    }

    async fn expire(&self, d: &Delivery, x: &Expiry, redelivered: bool) -> Done {
        let now = Utc::now();
        let remaining = (x.due - now).to_std().unwrap_or_default();
        if !remaining.is_zero() {
            // Not yet (never early): another hop through the tiers.
            return match self
                .delay(
                    d,
                    remaining,
                    Headers::from_table(d.properties.headers().as_ref()),
                )
                .await
            {
                Ok(()) => Done::Ack,
                Err(e) => e.into(),
            };
        }
        match self
            .store
            .resolve_expiry(x.command_id, now, redelivered)
            .await
        {
            Ok(r) => self.settle(d, r, "expiry").await,
            Err(e) => e.into(),
        }
    }

    /// Acts on a resolution: publish what was decided, or wait for the wait record.
    async fn settle(&self, d: &Delivery, r: Resolution, what: &'static str) -> Done {
        metrics::counter!("switchyard_resolutions_total", "source" => what, "outcome" => label(&r))
            .increment(1);
        match r {
            Resolution::Decided { event, record } => {
                // Decided, not reported: the redelivered message reports the same decision.
                switchyard_faults::point("after_resolution");
                match self.report(&event, &record).await {
                    Ok(()) => {
                        info!(command_id = %event.command_id, status = %event.status.as_str(), source = what, "waiting command ended");
                        count_ended(&event, what);
                        Done::Ack
                    }
                    Err(e) => e.into(),
                }
            }
            Resolution::Unknown => self.defer(d).await,
            Resolution::Duplicate | Resolution::Recorded | Resolution::Late => Done::Ack,
        }
    }

    /// Publishes the terminal event, after dead-lettering the command when it failed.
    async fn report(&self, event: &Event, record: &WaitRecord) -> Result<(), PublishError> {
        report(&self.publisher, event, record).await
    }

    /// Puts a message back to wait for its wait record, or gives it up.
    async fn defer(&self, d: &Delivery) -> Done {
        let headers = Headers::from_table(d.properties.headers().as_ref());
        let n = d
            .properties
            .headers()
            .header_int(DEFERRALS_HEADER)
            .unwrap_or(0);
        if n >= MAX_DEFERRALS {
            warn!("no waiting command ever matched this message: dead-lettered");
            let error = ErrorInfo::new(
                ErrorClass::Invalid,
                "uncorrelated",
                "no waiting command matches this message's reference",
            );
            let published = self
                .publisher
                .publish(Outgoing {
                    exchange: DEAD_EXCHANGE,
                    routing_key: "callbacks.uncorrelated",
                    body: &d.data,
                    properties: d
                        .properties
                        .clone()
                        .with_headers(dead_letter_headers(headers, &error, 0).build()),
                    mandatory: true,
                })
                .await;
            return match published {
                Ok(()) => Done::Ack,
                Err(e) => e.into(),
            };
        }
        let step = usize::try_from(n).unwrap_or(usize::MAX);
        let wait = self
            .tiers
            .get(step)
            .or(self.tiers.last())
            .copied()
            .unwrap_or(Duration::from_secs(1));
        match self
            .delay(d, wait, headers.int(DEFERRALS_HEADER, n + 1))
            .await
        {
            Ok(()) => Done::Ack,
            Err(e) => e.into(),
        }
    }

    async fn delay(
        &self,
        d: &Delivery,
        wait: Duration,
        headers: Headers,
    ) -> Result<(), PublishError> {
        let kind = short_property(d.properties.kind());
        let id = short_property(d.properties.message_id());
        messages::publish_callback_message(
            &self.publisher,
            &kind,
            &id,
            &d.data,
            messages::tier_within(&self.tiers, wait),
            headers,
        )
        .await
    }
}

/// Publishes how a waiting (or unknown) command ended, after dead-lettering the command when
/// it failed: shared by the resolver and the operators' resolution.
pub(crate) async fn report(
    publisher: &Publisher,
    event: &Event,
    record: &WaitRecord,
) -> Result<(), PublishError> {
    if event.status == Status::Failed {
        let error = event.error.clone().unwrap_or_else(|| {
            ErrorInfo::new(
                ErrorClass::Permanent,
                "failed",
                "the provider reported a failure",
            )
        });
        let body = record.command.to_bytes();
        let mut headers = dead_letter_headers(Headers::default(), &error, record.attempt);
        if record.run > 0 {
            headers = headers.int(messages::RUN_HEADER, i64::from(record.run));
        }
        let properties = command_properties(&record.command, headers);
        publisher
            .publish(Outgoing {
                exchange: DEAD_EXCHANGE,
                routing_key: &record.command.routing_key().to_string(),
                body: &body,
                properties,
                mandatory: true,
            })
            .await?;
    }
    publish_event(publisher, event, None).await
}

/// Where a callback message comes from, as the `source` label: a status check's answer
/// (`poll`, marked by the worker that asked) or a provider's webhook (`webhook`).
fn callback_source(d: &Delivery) -> &'static str {
    let source = d.properties.headers().header_str(messages::SOURCE_HEADER);
    if source.as_deref() == Some(messages::POLL_SOURCE) {
        "poll"
    } else {
        "webhook"
    }
}

/// Every `source` of a resolution, and what each can end in.
const RESOLUTION_SOURCES: [&str; 3] = ["webhook", "poll", "expiry"];
const RESOLUTION_OUTCOMES: [&str; 5] = ["decided", "deferred", "duplicate", "late", "recorded"];

/// Counts a command the ledger ended (a waiting or unknown command, decided by `source`) in
/// `switchyard_commands_total`, beside those workers end: alerts on failing commands see
/// both.
pub(crate) fn count_ended(event: &Event, source: &'static str) {
    if !matches!(event.status, Status::Completed | Status::Failed) {
        return;
    }
    let (kind, provider) =
        switchyard_telemetry::labels::kind_provider(event.kind.as_str(), event.provider.as_str());
    metrics::counter!(
        COMMANDS_TOTAL,
        "kind" => kind,
        "provider" => provider,
        "status" => event.status.as_str(),
        "source" => source
    )
    .increment(1);
}

/// Creates at zero the ledger's series of commands it ends and of resolutions, so alerts
/// see them before the first one.
pub(crate) fn zero_metrics(config: &switchyard_config::Config) {
    use switchyard_telemetry::labels::zero_counter;
    for p in &config.providers {
        for status in ["completed", "failed"] {
            for source in RESOLUTION_SOURCES.iter().chain(&["operator"]) {
                zero_counter(
                    COMMANDS_TOTAL,
                    &[
                        ("kind", p.kind.to_string()),
                        ("provider", p.name.to_string()),
                        ("status", status.into()),
                        ("source", (*source).into()),
                    ],
                );
            }
        }
    }
    for source in RESOLUTION_SOURCES {
        for outcome in RESOLUTION_OUTCOMES {
            zero_counter(
                "switchyard_resolutions_total",
                &[("source", source.into()), ("outcome", outcome.into())],
            );
        }
    }
    zero_counter(
        "switchyard_resolutions_total",
        &[("source", "operator".into()), ("outcome", "decided".into())],
    );
}

/// An AMQP short-string property (`type`, `message_id`), or empty when absent.
fn short_property(p: &Option<switchyard_amqp::lapin::types::ShortString>) -> String {
    p.as_ref().map(|v| v.to_string()).unwrap_or_default()
}

fn rejected(kind: &str, e: &dyn std::fmt::Display) -> Done {
    warn!(message_type = kind, error = %e, "undecodable message on the callbacks queue: dead-lettered");
    Done::Reject
}

fn label(r: &Resolution) -> &'static str {
    match r {
        Resolution::Unknown => "deferred",
        Resolution::Duplicate => "duplicate",
        Resolution::Recorded => "recorded",
        Resolution::Late => "late",
        Resolution::Decided { .. } => "decided",
    }
}
