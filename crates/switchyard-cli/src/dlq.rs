//! `switchyard dlq list|show|replay|purge`: every parking lot, where messages wait for an
//! operator ([`Lot`]): each kind's DLQ `switchyard.dlq.{kind}`, `switchyard.dlq.callbacks`,
//! `switchyard.dlq.unroutable` and `switchyard.dlq.ledger`. Nothing is parked where `dlq`
//! cannot see it.
//!
//! # Reading a DLQ without losing anything
//!
//! The DLQs are quorum queues. A quorum queue counts every *return* of a message (a
//! `basic.nack`/`reject` with requeue, or a channel closed with the message unacknowledged) in
//! `x-delivery-count`, and once that passes the queue's delivery limit it drops the message
//! (or dead-letters it, and a DLQ has nowhere further to go). The limit comes from
//! `x-delivery-limit`, from a policy an operator may well apply to every quorum queue, and in
//! RabbitMQ 4 it defaults to 20. So "peek by consuming without ack, then requeue" (and the
//! management API's `get` with `ack_requeue_true`, which does the same) would silently
//! destroy dead letters after a few `list`s. A stream would allow true peeking, but the
//! contract makes the DLQ a quorum queue.
//!
//! Instead every operation makes **one pass** over the queue: it reads exactly the messages
//! that were ready when it started (`basic.get`, one at a time, so nothing extra is held)
//! and settles each exactly once:
//!
//! - **kept**: an exact copy (body, properties, headers; the original routing key in
//!   [`ROUTING_KEY_HEADER`]) is published to the tail of the same queue through the default
//!   exchange, and the original is acknowledged only after the broker confirmed the copy;
//! - **replayed**: the message is published where it belongs (confirmed, mandatory), then the
//!   dead letter is acknowledged: commands (a kind's lot, the unroutable lot) to
//!   `switchyard.commands`, the resolver's messages to `switchyard.callbacks`, the ledger's
//!   back to the queue named by [`SOURCE_QUEUE_HEADER`];
//! - **deleted** (`purge`): acknowledged without a copy.
//!
//! Nothing is ever returned to the queue, so no delivery count grows and no limit can drop a
//! message, however often it is listed. Because the pass moves the first N messages behind
//! any newer ones in the order they were read, their relative order is kept. The price: a
//! pass costs a publish per message, and if the process dies between a copy's confirm and
//! the original's ack, that message is there twice (at least once, never lost; replaying both
//! is harmless, because a replay keeps the command's id and idempotency key). Two operators
//! running `dlq` on the same lot at the same moment each see part of the queue.
//!
//! # Replay: a new run
//!
//! The body is the original, byte for byte, so a command's `id` and `idempotency_key` (and
//! with them the provider's idempotency key) are unchanged. Headers that matter are kept
//! (`traceparent`, ...); the dead-letter headers (error, class, attempts, failed-at, `x-death`,
//! delivery count) and any retry, status-check or resolver headers are removed. A replayed
//! command starts a new run of it: `x-switchyard-run` is the dead letter's run + 1 (absent
//! means 0), and `x-switchyard-attempt` is removed, so the run has a fresh retry budget; its
//! events carry the new run, whose `seq` sorts above every event of the runs before. A replay
//! is refused (the dead letter is kept) when no work queue exists for its kind and provider,
//! since `switchyard.commands` would otherwise route it straight back to the unroutable lot,
//! and for a ledger record that names no existing source queue.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::Serialize;
use switchyard_amqp::lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use switchyard_amqp::lapin::types::{AMQPValue, FieldTable};
use switchyard_amqp::lapin::{Channel, Confirmation, Connection};
use switchyard_amqp::messages::{
    ATTEMPT_HEADER, ATTEMPTS_HEADER, CHECK_HEADER, DEFERRALS_HEADER, ERROR_CLASS_HEADER,
    ERROR_HEADER, FAILED_AT_HEADER, REFERENCE_HEADER, RUN_HEADER, SOURCE_HEADER,
    TRACEPARENT_HEADER, WAIT_UNTIL_HEADER,
};
use switchyard_amqp::topology::{
    CALLBACKS_DLQ, CALLBACKS_EXCHANGE, CALLBACKS_ROUTING_KEY, COMMANDS_EXCHANGE, KIND_HEADER,
    LEDGER_DLQ, TIER_HEADER, UNROUTABLE_DLQ, dead_letter_queue, work_queue,
};
use switchyard_amqp::{Delivery, HeaderRead, Headers};
use switchyard_config::Config;
use switchyard_core::{ErrorClass, Name};
use uuid::Uuid;

use crate::exit::CliError;
use crate::output::{self, age, or_dash, truncate, when};

/// Where a kept dead letter remembers the routing key it was dead-lettered with (its copy is
/// published through the default exchange, whose routing key is the queue's name).
pub use switchyard_amqp::messages::ROUTING_KEY_HEADER;
/// Set on a replayed command: when it was replayed (RFC 3339).
pub const REPLAYED_AT_HEADER: &str = "x-switchyard-replayed-at";
/// On a ledger dead letter: the queue the ledger consumed it from, where a replay sends it.
pub use switchyard_amqp::messages::SOURCE_QUEUE_HEADER;

/// Messages read before their copies or replays are confirmed together.
const BATCH: usize = 64;
/// How long the broker may take to confirm a batch.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// A parking lot: one queue where messages wait for an operator.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lot {
    /// `switchyard.dlq.{kind}`: commands that failed (or were invalid) in that kind's worker.
    Kind(Name),
    /// `switchyard.dlq.callbacks`: wait records, callbacks and expiries the resolver could not
    /// handle.
    Callbacks,
    /// `switchyard.dlq.unroutable`: commands no worker serves, after their `failed` event.
    Unroutable,
    /// `switchyard.dlq.ledger`: records the ledger's database refused.
    Ledger,
}

impl Lot {
    /// The queue it is.
    pub fn queue(&self) -> String {
        match self {
            Self::Kind(k) => dead_letter_queue(k),
            Self::Callbacks => CALLBACKS_DLQ.to_owned(),
            Self::Unroutable => UNROUTABLE_DLQ.to_owned(),
            Self::Ledger => LEDGER_DLQ.to_owned(),
        }
    }

    /// Whether it holds commands (which replay to `switchyard.commands` as a new run).
    pub fn holds_commands(&self) -> bool {
        matches!(self, Self::Kind(_) | Self::Unroutable)
    }
}

impl std::fmt::Display for Lot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kind(k) => write!(f, "kind:{k}"),
            Self::Callbacks => f.write_str("callbacks"),
            Self::Unroutable => f.write_str("unroutable"),
            Self::Ledger => f.write_str("ledger"),
        }
    }
}

impl Serialize for Lot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Parses a lot: `kind:payment` (or just `payment`), `callbacks`, `unroutable`, `ledger`.
pub fn parse_lot(s: &str) -> Result<Lot, String> {
    match s {
        "callbacks" => Ok(Lot::Callbacks),
        "unroutable" => Ok(Lot::Unroutable),
        "ledger" => Ok(Lot::Ledger),
        other => {
            let kind = other.strip_prefix("kind:").unwrap_or(other);
            parse_name(kind)
                .map(Lot::Kind)
                .map_err(|e| format!("{e} (expected kind:<kind>, callbacks, unroutable or ledger)"))
        }
    }
}

/// Which dead letters an operation applies to. Every filter given must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Only these parking lots (every lot when empty).
    pub lots: Vec<Lot>,
    /// Only commands of this provider.
    pub provider: Option<Name>,
    /// Only this error class.
    pub class: Option<ErrorClass>,
    /// Only dead letters that failed at least this long ago.
    pub older_than: Option<Duration>,
    /// Only dead letters that failed at most this long ago.
    pub newer_than: Option<Duration>,
    /// Only this command.
    pub id: Option<Uuid>,
}

/// Parses an error class as the contract names it.
pub fn parse_class(s: &str) -> Result<ErrorClass, String> {
    match s {
        "transient" => Ok(ErrorClass::Transient),
        "permanent" => Ok(ErrorClass::Permanent),
        "timeout" => Ok(ErrorClass::Timeout),
        "invalid" => Ok(ErrorClass::Invalid),
        "expired" => Ok(ErrorClass::Expired),
        "unknown" => Ok(ErrorClass::Unknown),
        other => Err(format!(
            "unknown error class {other:?}: expected transient, permanent, timeout, invalid, expired or unknown"
        )),
    }
}

/// Parses an age such as `90s`, `15m`, `1h`, `2days`, `1h 30m`.
pub fn parse_age(s: &str) -> Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(s)
        .map_err(|e| format!("{e} (examples: 30s, 15m, 1h, 2days)"))
}

/// Parses a kind or provider name.
pub fn parse_name(s: &str) -> Result<Name, String> {
    s.parse::<Name>().map_err(|e| e.to_string())
}

impl Filter {
    /// Whether `dl` passes every filter, at `now`.
    pub fn matches(&self, dl: &DeadLetter, now: DateTime<Utc>) -> bool {
        if !self.lots.is_empty() && !self.lots.contains(&dl.lot) {
            return false;
        }
        if let Some(p) = &self.provider
            && dl.provider.as_deref() != Some(p.as_str())
        {
            return false;
        }
        if let Some(c) = self.class
            && dl.class.as_deref() != Some(c.as_str())
        {
            return false;
        }
        if let Some(id) = self.id
            && dl.id != Some(id)
        {
            return false;
        }
        let failed_ago = dl.failed_at.map(|t| now - t);
        if let Some(d) = self.older_than {
            match failed_ago {
                Some(ago) if ago >= chrono::Duration::from_std(d).unwrap_or_default() => {}
                _ => return false,
            }
        }
        if let Some(d) = self.newer_than {
            match failed_ago {
                Some(ago)
                    if ago <= chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX) => {}
                _ => return false,
            }
        }
        true
    }

    /// Whether any filter beyond the lot is set.
    pub fn is_narrowed(&self) -> bool {
        self.provider.is_some()
            || self.class.is_some()
            || self.older_than.is_some()
            || self.newer_than.is_some()
            || self.id.is_some()
    }
}

/// One dead letter as operators see it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeadLetter {
    /// The parking lot it is in.
    pub lot: Lot,
    /// The queue of that lot.
    pub queue: String,
    /// The command's id, when the body is readable enough to have one.
    pub id: Option<Uuid>,
    /// The kind: the DLQ's, else the body's, else (for unroutable commands) the routing key's.
    pub kind: Option<String>,
    /// The provider, from the body or else (for commands) the routing key.
    pub provider: Option<String>,
    /// The operation, from the body or else (for commands) the routing key.
    pub operation: Option<String>,
    /// The routing key it was dead-lettered with.
    pub routing_key: String,
    /// `x-switchyard-error-class`.
    pub class: Option<String>,
    /// `x-switchyard-error` (redacted by the worker).
    pub error: Option<String>,
    /// `x-switchyard-attempts`.
    pub attempts: Option<i64>,
    /// The run it failed in (`x-switchyard-run`, 0 when absent), for commands.
    pub run: Option<i64>,
    /// For the ledger's dead letters: the queue it was consumed from, where a replay goes.
    pub source_queue: Option<String>,
    /// `x-switchyard-failed-at`, else when the broker dead-lettered it.
    pub failed_at: Option<DateTime<Utc>>,
    /// Why the broker dead-lettered it, when the broker did (e.g. `delivery_limit`: a crash
    /// loop), from `x-death`.
    pub broker_reason: Option<String>,
    /// The command's idempotency key.
    pub idempotency_key: Option<String>,
    /// The W3C trace context it carried.
    pub traceparent: Option<String>,
    /// The body, redacted: the command as JSON, or the raw text when it is not JSON.
    pub command: serde_json::Value,
    /// Every header.
    pub headers: BTreeMap<String, serde_json::Value>,
}

/// A header value as JSON (strings, numbers, booleans, tables and arrays).
fn header_json(v: &AMQPValue) -> serde_json::Value {
    use serde_json::Value;
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Float(n) => Value::from(*n),
        AMQPValue::Double(n) => Value::from(*n),
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::ShortString(s) => Value::from(s.as_str()),
        AMQPValue::LongString(s) => Value::from(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ByteArray(b) => Value::from(String::from_utf8_lossy(b.as_slice())),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(header_json).collect()),
        AMQPValue::FieldTable(t) => table_json(t),
        AMQPValue::DecimalValue(d) => Value::from(format!("{d:?}")),
        AMQPValue::Void => Value::Null,
    }
}

fn table_json(t: &FieldTable) -> serde_json::Value {
    serde_json::Value::Object(
        t.inner()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), header_json(v)))
            .collect(),
    )
}

fn str_field(body: &serde_json::Value, field: &str) -> Option<String> {
    body.get(field)?.as_str().map(str::to_owned)
}

/// Shared with the workers, which answer what the broker dead-lettered on its own.
pub use switchyard_amqp::{broker_death, broker_death_reason};

impl DeadLetter {
    /// Reads a delivery of `lot`'s queue.
    pub fn read(lot: &Lot, delivery: &Delivery) -> Self {
        let headers = delivery.properties.headers();
        let routing_key = headers
            .header_str(ROUTING_KEY_HEADER)
            .unwrap_or_else(|| delivery.routing_key.to_string());
        // Shown redacted: the queue keeps the original, byte for byte, for replay.
        let redactor = switchyard_http::Redactor::new(&[], usize::MAX);
        let command = match serde_json::from_slice::<serde_json::Value>(&delivery.data) {
            Ok(body) => redactor.redacted(body),
            Err(_) => {
                serde_json::Value::String(redactor.text(&String::from_utf8_lossy(&delivery.data)))
            }
        };
        // Only a command's routing key says kind.provider.operation.
        let mut rk = routing_key.split('.');
        let (rk_kind, rk_provider, rk_operation) = if lot.holds_commands() {
            (rk.next(), rk.next(), rk.next())
        } else {
            (None, None, None)
        };
        let kind = match lot {
            Lot::Kind(k) => Some(k.to_string()),
            _ => str_field(&command, "kind").or_else(|| rk_kind.map(str::to_owned)),
        };
        let id = switchyard_core::command::sniff_id(&delivery.data).or_else(|| {
            delivery
                .properties
                .message_id()
                .as_ref()
                .and_then(|m| m.as_str().parse().ok())
        });
        let death = broker_death(headers);
        let broker_reason = death
            .as_ref()
            .and_then(|t| Some(t.clone()).header_str("reason"));
        let broker_time = death.as_ref().and_then(|t| {
            let secs = Some(t.clone()).header_int("time")?;
            DateTime::from_timestamp(secs, 0)
        });
        let failed_at = headers
            .header_str(FAILED_AT_HEADER)
            .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
            .map(|t| t.with_timezone(&Utc))
            .or(broker_time);
        Self {
            lot: lot.clone(),
            queue: lot.queue(),
            id,
            kind,
            provider: str_field(&command, "provider").or_else(|| rk_provider.map(str::to_owned)),
            operation: str_field(&command, "operation").or_else(|| rk_operation.map(str::to_owned)),
            routing_key,
            class: headers.header_str(ERROR_CLASS_HEADER),
            error: headers.header_str(ERROR_HEADER),
            attempts: headers.header_int(ATTEMPTS_HEADER),
            run: lot
                .holds_commands()
                .then(|| headers.header_int(RUN_HEADER).unwrap_or(0)),
            // The ledger names it; a record the broker dead-lettered (past the delivery limit
            // of a ledger queue) has it in `x-death`.
            source_queue: (*lot == Lot::Ledger)
                .then(|| {
                    headers.header_str(SOURCE_QUEUE_HEADER).or_else(|| {
                        death
                            .as_ref()
                            .and_then(|t| Some(t.clone()).header_str("queue"))
                    })
                })
                .flatten(),
            failed_at,
            broker_reason,
            idempotency_key: str_field(&command, "idempotency_key"),
            traceparent: headers.header_str(TRACEPARENT_HEADER),
            headers: headers
                .as_ref()
                .map(|t| match redactor.redacted(table_json(t)) {
                    serde_json::Value::Object(m) => m.into_iter().collect(),
                    _ => BTreeMap::new(),
                })
                .unwrap_or_default(),
            command,
        }
    }

    /// The routing key to replay it with: for a command `{kind}.{provider}.{operation}` of
    /// the body, else the one it was dead-lettered with; `callbacks.in` for the resolver; the
    /// source queue's name for the ledger (published through the default exchange).
    pub fn replay_routing_key(&self) -> String {
        match &self.lot {
            Lot::Callbacks => CALLBACKS_ROUTING_KEY.to_owned(),
            Lot::Ledger => self
                .source_queue
                .clone()
                .unwrap_or_else(|| self.routing_key.clone()),
            Lot::Kind(_) | Lot::Unroutable => match (&self.kind, &self.provider, &self.operation) {
                (Some(k), Some(p), Some(o)) if self.command.is_object() => format!("{k}.{p}.{o}"),
                _ => self.routing_key.clone(),
            },
        }
    }

    /// The exchange a replay goes to.
    pub fn replay_exchange(&self) -> &'static str {
        match self.lot {
            Lot::Kind(_) | Lot::Unroutable => COMMANDS_EXCHANGE,
            Lot::Callbacks => CALLBACKS_EXCHANGE,
            Lot::Ledger => "",
        }
    }

    /// The class column: the contract's class, else what the broker said.
    fn class_label(&self) -> String {
        match (&self.class, &self.broker_reason) {
            (Some(c), _) => c.clone(),
            (None, Some(r)) => format!("broker:{r}"),
            (None, None) => "-".to_owned(),
        }
    }
}

/// The headers of the copy that keeps a dead letter: everything, minus the broker's delivery
/// count, plus the routing key it was dead-lettered with.
pub fn kept_headers(delivery: &Delivery, routing_key: &str) -> FieldTable {
    Headers::from_table(delivery.properties.headers().as_ref())
        .without("x-delivery-count")
        .str(ROUTING_KEY_HEADER, routing_key)
        .build()
}

/// Headers no replay carries besides the broker's annotations: the dead-letter headers, and
/// the retry, status check and resolver bookkeeping of the failed run.
const PARKING_HEADERS: [&str; 12] = [
    ERROR_CLASS_HEADER,
    ERROR_HEADER,
    ATTEMPTS_HEADER,
    FAILED_AT_HEADER,
    ROUTING_KEY_HEADER,
    SOURCE_QUEUE_HEADER,
    CHECK_HEADER,
    REFERENCE_HEADER,
    WAIT_UNTIL_HEADER,
    DEFERRALS_HEADER,
    KIND_HEADER,
    TIER_HEADER,
];

/// The original headers that matter (e.g. `traceparent`) without the broker's annotations
/// (`x-death`, the delivery count) and [`PARKING_HEADERS`], stamped with the replay's time.
fn cleaned(delivery: &Delivery, now: DateTime<Utc>) -> Headers {
    let mut h =
        Headers::from_table(delivery.properties.headers().as_ref()).without_broker_annotations();
    for key in PARKING_HEADERS {
        h = h.without(key);
    }
    h.str(REPLAYED_AT_HEADER, &now.to_rfc3339())
}

/// The headers of a replayed command: a new run of it (contract 7). The run is the dead
/// letter's + 1 (absent = 0), the attempt counter is removed so the run has a fresh retry
/// budget, and so is the ingress's "pending already sent" mark, so the new run reports its own
/// `pending`.
pub fn replay_headers(delivery: &Delivery, now: DateTime<Utc>) -> FieldTable {
    let run = delivery
        .properties
        .headers()
        .header_int(RUN_HEADER)
        .unwrap_or(0)
        .max(0);
    cleaned(delivery, now)
        .without(ATTEMPT_HEADER)
        .without(SOURCE_HEADER)
        .int(RUN_HEADER, run.saturating_add(1))
        .build()
}

/// The headers of anything else replayed (a callback, a ledger record): the original ones,
/// without the parking lot's.
pub fn resend_headers(delivery: &Delivery, now: DateTime<Utc>) -> FieldTable {
    cleaned(delivery, now).build()
}

/// What to do with one dead letter during a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Leave it in the queue (as a confirmed copy at the tail).
    Keep,
    /// Publish the command again, then remove the dead letter.
    Replay,
    /// Remove it.
    Delete,
}

/// How a dead letter was settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "reason")]
pub enum Outcome {
    /// Still in the queue.
    Kept,
    /// Published to `switchyard.commands` and removed from the DLQ.
    Replayed,
    /// Removed.
    Deleted,
    /// A replay was refused; the dead letter is still in the queue.
    Refused(String),
}

/// One pass over one DLQ.
struct Pass<'a> {
    connection: &'a Connection,
    channel: Channel,
    /// Whether a queue exists, by name: a replay needs somewhere to go.
    routes: HashMap<String, bool>,
}

impl<'a> Pass<'a> {
    async fn open(connection: &'a Connection) -> anyhow::Result<Self> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            connection,
            channel,
            routes: HashMap::new(),
        })
    }

    /// Whether `switchyard.work.{kind}.{provider}` exists.
    async fn route_exists(&mut self, kind: &str, provider: &str) -> anyhow::Result<bool> {
        let (Ok(k), Ok(p)) = (kind.parse::<Name>(), provider.parse::<Name>()) else {
            return Ok(false);
        };
        self.queue_exists(work_queue(&k, &p)).await
    }

    /// Whether `queue` exists (a passive declare, on a channel of its own since a missing
    /// queue closes the channel).
    async fn queue_exists(&mut self, queue: String) -> anyhow::Result<bool> {
        if let Some(known) = self.routes.get(&queue) {
            return Ok(*known);
        }
        let probe = self.connection.create_channel().await?;
        let exists = probe
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .is_ok();
        if exists {
            let _ = probe.close(200, "probed".into()).await;
        }
        self.routes.insert(queue, exists);
        Ok(exists)
    }
}

/// The number of ready messages in `queue`, or `None` when it does not exist.
pub async fn ready_count(connection: &Connection, queue: &str) -> anyhow::Result<Option<u32>> {
    let ch = connection.create_channel().await?;
    match ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
    {
        Ok(q) => {
            let _ = ch.close(200, "counted".into()).await;
            Ok(Some(q.message_count()))
        }
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn is_not_found(e: &switchyard_amqp::lapin::Error) -> bool {
    let text = e.to_string();
    text.contains("NOT_FOUND") || text.contains("404")
}

/// Whether a replay of `dl` has somewhere to go: `Ok(())`, or why not.
async fn replay_check(pass: &mut Pass<'_>, dl: &DeadLetter) -> anyhow::Result<Result<(), String>> {
    Ok(match &dl.lot {
        Lot::Kind(_) | Lot::Unroutable => match (&dl.kind, &dl.provider) {
            (Some(k), Some(p)) if pass.route_exists(k, p).await? => Ok(()),
            (Some(k), Some(p)) => Err(format!(
                "no work queue switchyard.work.{k}.{p}: is provider {p:?} of kind {k:?} configured?"
            )),
            _ => Err("the command names no kind or provider".to_owned()),
        },
        // `switchyard.callbacks` is in every topology; a mandatory publish catches the rest.
        Lot::Callbacks => Ok(()),
        Lot::Ledger => match &dl.source_queue {
            Some(q) if !q.starts_with("switchyard.") => {
                Err(format!("{q:?} is not a Switchyard queue"))
            }
            Some(q) if pass.queue_exists(q.clone()).await? => Ok(()),
            Some(q) => Err(format!("its source queue {q} does not exist")),
            None => Err(format!("it names no source queue ({SOURCE_QUEUE_HEADER})")),
        },
    })
}

/// Walks `lot`'s queue once: `decide` picks each dead letter's action, `settled` hears how it
/// was settled. Returns every dead letter with its outcome, in queue order.
pub async fn walk(
    connection: &Connection,
    lot: &Lot,
    mut decide: impl FnMut(&DeadLetter) -> Action,
    mut settled: impl FnMut(&DeadLetter, &Outcome),
) -> anyhow::Result<Vec<(DeadLetter, Outcome)>> {
    let queue = lot.queue();
    let Some(total) = ready_count(connection, &queue).await? else {
        bail!("the dead-letter queue {queue} does not exist (run `switchyard topology apply`)");
    };
    let mut pass = Pass::open(connection).await?;
    let mut out = Vec::new();
    let mut remaining = total;
    while remaining > 0 {
        let mut batch = Vec::new();
        while batch.len() < BATCH && remaining > 0 {
            let got = pass
                .channel
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
                .await
                .with_context(|| format!("reading {queue}"))?;
            remaining -= 1;
            match got {
                Some(m) => batch.push(m.delivery),
                // Someone else took the rest.
                None => remaining = 0,
            }
        }
        let now = Utc::now();
        let mut planned = Vec::with_capacity(batch.len());
        for delivery in batch {
            let dl = DeadLetter::read(lot, &delivery);
            let outcome = match decide(&dl) {
                Action::Keep => Outcome::Kept,
                Action::Delete => Outcome::Deleted,
                Action::Replay => match replay_check(&mut pass, &dl).await? {
                    Ok(()) => Outcome::Replayed,
                    Err(why) => Outcome::Refused(why),
                },
            };
            planned.push((delivery, dl, outcome));
        }
        // Publish every copy and replay of the batch, then wait for their confirms.
        let mut confirms = Vec::with_capacity(planned.len());
        for (delivery, dl, outcome) in &planned {
            // Kept (or refused) messages go to the back of their queue; replays where they
            // belong (commands as a new run).
            let target = match outcome {
                Outcome::Deleted => None,
                Outcome::Kept | Outcome::Refused(_) => Some((
                    "",
                    queue.to_string(),
                    kept_headers(delivery, &dl.routing_key),
                )),
                Outcome::Replayed => Some((
                    dl.replay_exchange(),
                    dl.replay_routing_key(),
                    if lot.holds_commands() {
                        replay_headers(delivery, now)
                    } else {
                        resend_headers(delivery, now)
                    },
                )),
            };
            let confirm = match target {
                None => None,
                Some((exchange, routing_key, headers)) => Some(
                    pass.channel
                        .basic_publish(
                            exchange.into(),
                            routing_key.as_str().into(),
                            BasicPublishOptions {
                                mandatory: true,
                                immediate: false,
                            },
                            &delivery.data,
                            delivery.properties.clone().with_headers(headers),
                        )
                        .await?,
                ),
            };
            confirms.push(confirm);
        }
        for ((delivery, dl, outcome), confirm) in planned.into_iter().zip(confirms) {
            if let Some(confirm) = confirm {
                let answer = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
                    .await
                    .map_err(|_| {
                        anyhow::anyhow!("no confirm from the broker within {CONFIRM_TIMEOUT:?}")
                    })?
                    .context("waiting for the broker's confirm")?;
                match answer {
                    Confirmation::Ack(None) => {}
                    Confirmation::Ack(Some(r)) | Confirmation::Nack(Some(r)) => bail!(
                        "the broker returned a message as unroutable ({}); the dead letter {} is left in {queue}",
                        r.reply_text,
                        or_dash(dl.id)
                    ),
                    Confirmation::Nack(None) => bail!(
                        "the broker refused a publish (nack); the dead letter {} is left in {queue}",
                        or_dash(dl.id)
                    ),
                    Confirmation::NotRequested => bail!("the channel is not in confirm mode"),
                }
            }
            pass.channel
                .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
                .await
                .with_context(|| format!("acknowledging a dead letter of {queue}"))?;
            settled(&dl, &outcome);
            out.push((dl, outcome));
        }
    }
    let _ = pass.channel.close(200, "done".into()).await;
    Ok(out)
}

/// The parking lots an operation covers: `filter.lots`, else every kind's DLQ (each kind
/// built in or named by a configured provider), the callbacks', the unroutable commands' and
/// the ledger's.
pub fn lots(config: &Config, filter: &Filter) -> Vec<Lot> {
    if !filter.lots.is_empty() {
        let unique: BTreeSet<Lot> = filter.lots.iter().cloned().collect();
        return unique.into_iter().collect();
    }
    let mut kinds: BTreeSet<Name> = switchyard_ingress::builtin_kinds()
        .iter()
        .map(|k| k.spec().name.clone())
        .collect();
    kinds.extend(config.kinds.iter().map(|k| k.name.clone()));
    kinds.extend(config.providers.iter().map(|p| p.kind.clone()));
    kinds
        .into_iter()
        .map(Lot::Kind)
        .chain([Lot::Callbacks, Lot::Unroutable, Lot::Ledger])
        .collect()
}

/// Output options shared by the subcommands.
#[derive(Debug, Clone, Copy, Default)]
pub struct Output {
    /// JSON instead of a table.
    pub json: bool,
}

/// Walks every covered lot with `decide`. A missing queue of a lot that was not asked for by
/// name is skipped with a note (its topology was never applied).
async fn walk_all(
    connection: &Connection,
    config: &Config,
    filter: &Filter,
    mut decide: impl FnMut(&DeadLetter) -> Action,
    mut settled: impl FnMut(&DeadLetter, &Outcome),
) -> anyhow::Result<Vec<(DeadLetter, Outcome)>> {
    let mut all = Vec::new();
    for lot in lots(config, filter) {
        let queue = lot.queue();
        if filter.lots.is_empty() && ready_count(connection, &queue).await?.is_none() {
            output::note(format!("note: {queue} does not exist; skipped"));
            continue;
        }
        all.extend(walk(connection, &lot, &mut decide, &mut settled).await?);
    }
    Ok(all)
}

/// The table of dead letters.
pub fn render_list(items: &[&DeadLetter], now: DateTime<Utc>, terminal: bool) -> String {
    output::render_table(
        &[
            "LOT",
            "ID",
            "KIND",
            "PROVIDER",
            "OPERATION",
            "CLASS",
            "ATTEMPTS",
            "FAILED",
            "ERROR",
        ],
        items.iter().map(|d| {
            vec![
                d.lot.to_string(),
                or_dash(d.id),
                or_dash(d.kind.as_ref()),
                or_dash(d.provider.as_ref()),
                or_dash(d.operation.as_ref()),
                d.class_label(),
                or_dash(d.attempts),
                d.failed_at
                    .map_or_else(|| "-".to_owned(), |t| format!("{} ago", age(now, t))),
                truncate(d.error.as_deref().unwrap_or("-"), 60),
            ]
        }),
        terminal,
    )
}

/// `dlq list`.
pub async fn list(config: &Config, filter: &Filter, out: Output) -> anyhow::Result<()> {
    let connection = crate::connect::connect(config, "switchyard-dlq").await?;
    let now = Utc::now();
    let all = walk_all(&connection, config, filter, |_| Action::Keep, |_, _| {}).await;
    let _ = connection.close(200, "done".into()).await;
    let all = all?;
    let matching: Vec<&DeadLetter> = all
        .iter()
        .map(|(d, _)| d)
        .filter(|d| filter.matches(d, now))
        .collect();
    if out.json {
        return output::json(&matching);
    }
    if matching.is_empty() {
        output::print_line("no dead letters match");
        return Ok(());
    }
    output::print_line(&render_list(&matching, now, output::stdout_is_terminal()));
    output::note(format!(
        "{} of {} {}",
        matching.len(),
        output::dead_letters(all.len()),
        if matching.len() == 1 {
            "matches"
        } else {
            "match"
        }
    ));
    Ok(())
}

/// The details of one dead letter.
pub fn render_show(d: &DeadLetter) -> String {
    let mut rows = vec![
        ("id", or_dash(d.id)),
        ("lot", d.lot.to_string()),
        ("queue", d.queue.clone()),
        ("routing key", d.routing_key.clone()),
        ("kind", or_dash(d.kind.as_ref())),
        ("provider", or_dash(d.provider.as_ref())),
        ("operation", or_dash(d.operation.as_ref())),
        ("class", d.class_label()),
        ("error", or_dash(d.error.as_ref())),
        ("attempts", or_dash(d.attempts)),
        ("run", or_dash(d.run)),
        ("failed at", or_dash(d.failed_at.map(when))),
        ("idempotency key", or_dash(d.idempotency_key.as_ref())),
        ("traceparent", or_dash(d.traceparent.as_ref())),
    ];
    if let Some(r) = &d.broker_reason {
        rows.push(("broker reason", r.clone()));
    }
    if let Some(q) = &d.source_queue {
        rows.push(("source queue", q.clone()));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut text: Vec<String> = rows
        .into_iter()
        .map(|(k, v)| format!("{k:<width$}  {v}"))
        .collect();
    text.push(String::new());
    text.push("headers:".to_owned());
    for (k, v) in &d.headers {
        text.push(format!("  {k}: {v}"));
    }
    text.push(String::new());
    text.push(
        if d.lot.holds_commands() {
            "command:"
        } else {
            "body:"
        }
        .to_owned(),
    );
    text.push(serde_json::to_string_pretty(&d.command).unwrap_or_default());
    text.join("\n")
}

/// `dlq show <id>`.
pub async fn show(config: &Config, id: Uuid, lots: Vec<Lot>, out: Output) -> anyhow::Result<()> {
    let filter = Filter {
        lots,
        id: Some(id),
        ..Default::default()
    };
    let connection = crate::connect::connect(config, "switchyard-dlq").await?;
    let all = walk_all(&connection, config, &filter, |_| Action::Keep, |_, _| {}).await;
    let _ = connection.close(200, "done".into()).await;
    let found: Vec<DeadLetter> = all?
        .into_iter()
        .map(|(d, _)| d)
        .filter(|d| d.id == Some(id))
        .collect();
    if found.is_empty() {
        return Err(CliError::not_found(format!("no dead letter for command {id}")).into());
    }
    if out.json {
        return if found.len() == 1 {
            output::json(&found[0])
        } else {
            output::json(&found)
        };
    }
    let shown: Vec<String> = found.iter().map(render_show).collect();
    output::print_line(&shown.join("\n\n"));
    Ok(())
}

/// What `dlq replay` works on.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// One command.
    One(Uuid),
    /// Every dead letter the filter matches.
    All,
}

/// The result line of one replayed (or refused) dead letter.
#[derive(Debug, Clone, Serialize)]
struct Replayed<'a> {
    id: Option<Uuid>,
    lot: &'a Lot,
    kind: Option<&'a str>,
    exchange: &'static str,
    routing_key: String,
    idempotency_key: Option<&'a str>,
    #[serde(flatten)]
    outcome: &'a Outcome,
}

fn progress_bar(len: u64, show: bool, what: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{prefix} [{bar:40}] {pos}/{len} dead letters read ({per_sec}, eta {eta}) {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what.to_owned());
    bar
}

/// Total ready dead letters in the covered DLQs (the length of a progress bar).
async fn total_ready(
    connection: &Connection,
    config: &Config,
    filter: &Filter,
) -> anyhow::Result<u64> {
    let mut total = 0u64;
    for lot in lots(config, filter) {
        total += u64::from(ready_count(connection, &lot.queue()).await?.unwrap_or(0));
    }
    Ok(total)
}

/// `dlq replay <id> | --all [filters] [--dry-run]`.
pub async fn replay(
    config: &Config,
    selection: Selection,
    mut filter: Filter,
    dry_run: bool,
    out: Output,
) -> anyhow::Result<()> {
    if let Selection::One(id) = selection {
        filter.id = Some(id);
    }
    let connection = crate::connect::connect(config, "switchyard-dlq").await?;
    let now = Utc::now();
    let show_bar = selection == Selection::All && output::stderr_is_terminal() && !out.json;
    let bar = progress_bar(
        total_ready(&connection, config, &filter).await.unwrap_or(0),
        show_bar,
        if dry_run { "checking" } else { "replaying" },
    );
    let mut replayed_once = false;
    let result = walk_all(
        &connection,
        config,
        &filter,
        |d| {
            // One command is replayed once, even if it is in the queue twice.
            let one = matches!(selection, Selection::One(_));
            if dry_run || !filter.matches(d, now) || (one && replayed_once) {
                Action::Keep
            } else {
                replayed_once = one;
                Action::Replay
            }
        },
        |_, _| bar.inc(1),
    )
    .await;
    bar.finish_and_clear();
    let _ = connection.close(200, "done".into()).await;
    let all = result?;
    let chosen: Vec<(&DeadLetter, Outcome)> = all
        .iter()
        .filter(|(d, _)| filter.matches(d, now))
        .map(|(d, o)| {
            let o = match (dry_run, o) {
                // In a dry run everything matching is what would be replayed.
                (true, _) => Outcome::Replayed,
                (false, o) => o.clone(),
            };
            (d, o)
        })
        .filter(|(_, o)| !matches!(o, Outcome::Kept))
        .collect();
    if let Selection::One(id) = selection
        && chosen.is_empty()
    {
        return Err(CliError::not_found(format!("no dead letter for command {id}")).into());
    }
    let refused = chosen
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Refused(_)))
        .count();
    let done = chosen.len() - refused;
    if out.json {
        let items: Vec<Replayed<'_>> = chosen
            .iter()
            .map(|(d, o)| Replayed {
                id: d.id,
                lot: &d.lot,
                kind: d.kind.as_deref(),
                exchange: d.replay_exchange(),
                routing_key: d.replay_routing_key(),
                idempotency_key: d.idempotency_key.as_deref(),
                outcome: o,
            })
            .collect();
        output::json(&serde_json::json!({
            "dry_run": dry_run,
            "replayed": if dry_run { 0 } else { done },
            "would_replay": if dry_run { done } else { 0 },
            "refused": refused,
            "items": items,
        }))?;
    } else if !chosen.is_empty() {
        output::print_line(&output::table(
            &["LOT", "ID", "TO", "IDEMPOTENCY KEY", "RESULT"],
            chosen.iter().map(|(d, o)| {
                vec![
                    d.lot.to_string(),
                    or_dash(d.id),
                    match d.replay_exchange() {
                        "" => d.replay_routing_key(),
                        x => format!("{x} {}", d.replay_routing_key()),
                    },
                    or_dash(d.idempotency_key.as_ref()),
                    match (dry_run, o) {
                        (true, _) => "would replay".to_owned(),
                        (false, Outcome::Refused(r)) => format!("refused: {r}"),
                        (false, _) => "replayed".to_owned(),
                    },
                ]
            }),
        ));
    }
    if !out.json {
        output::print_line(&if dry_run {
            format!(
                "dry run: {} would be replayed; nothing was changed",
                output::dead_letters(done)
            )
        } else if refused > 0 {
            format!(
                "replayed {}; {refused} refused and kept",
                output::dead_letters(done)
            )
        } else {
            format!("replayed {}", output::dead_letters(done))
        });
    }
    if refused > 0 && !dry_run {
        bail!(
            "{} could not be replayed and {} kept",
            output::dead_letters(refused),
            if refused == 1 { "was" } else { "were" }
        );
    }
    Ok(())
}

/// What tells one dead letter from another across two passes: the command id and when it
/// failed.
type Identity = (Option<Uuid>, Option<DateTime<Utc>>);

/// `dlq purge [filters] --yes`.
pub async fn purge(config: &Config, filter: Filter, yes: bool, out: Output) -> anyhow::Result<()> {
    let connection = crate::connect::connect(config, "switchyard-dlq").await?;
    let result = purge_on(&connection, config, filter, yes, out).await;
    let _ = connection.close(200, "done".into()).await;
    result
}

async fn purge_on(
    connection: &Connection,
    config: &Config,
    filter: Filter,
    yes: bool,
    out: Output,
) -> anyhow::Result<()> {
    let now = Utc::now();
    // Without --yes, a first pass counts what would go and a person confirms; the second pass
    // then deletes exactly those messages (by command id and failure time), nothing newer.
    let confirmed: Option<BTreeSet<Identity>> = if yes {
        None
    } else {
        if !output::stdin_is_terminal() {
            return Err(CliError::usage(
                "refusing to purge without --yes (no terminal to ask for confirmation)",
            )
            .into());
        }
        let seen = walk_all(connection, config, &filter, |_| Action::Keep, |_, _| {}).await?;
        let doomed: BTreeSet<_> = seen
            .iter()
            .filter(|(d, _)| filter.matches(d, now))
            .map(|(d, _)| (d.id, d.failed_at))
            .collect();
        if doomed.is_empty() {
            output::print_line("no dead letters match; nothing to purge");
            return Ok(());
        }
        let question = format!(
            "Delete {} for good? Type 'yes' to confirm: ",
            output::dead_letters(doomed.len())
        );
        let answer = tokio::task::spawn_blocking(move || {
            use std::io::{BufRead, Write};
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "{question}");
            let _ = err.flush();
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
            line
        })
        .await?;
        if !matches!(answer.trim(), "yes" | "y") {
            output::print_line("aborted; nothing was deleted");
            return Ok(());
        }
        Some(doomed)
    };
    let bar = progress_bar(
        total_ready(connection, config, &filter).await.unwrap_or(0),
        output::stderr_is_terminal() && !out.json,
        "purging",
    );
    let result = walk_all(
        connection,
        config,
        &filter,
        |d| {
            let chosen = filter.matches(d, now)
                && confirmed
                    .as_ref()
                    .is_none_or(|set| set.contains(&(d.id, d.failed_at)));
            if chosen { Action::Delete } else { Action::Keep }
        },
        |_, _| bar.inc(1),
    )
    .await;
    bar.finish_and_clear();
    let deleted: Vec<&DeadLetter> = result
        .as_ref()
        .map(|all| {
            all.iter()
                .filter(|(_, o)| *o == Outcome::Deleted)
                .map(|(d, _)| d)
                .collect()
        })
        .unwrap_or_default();
    if out.json {
        let ids: Vec<Option<Uuid>> = deleted.iter().map(|d| d.id).collect();
        output::json(&serde_json::json!({"deleted": deleted.len(), "ids": ids}))?;
    } else {
        output::print_line(&format!("deleted {}", output::dead_letters(deleted.len())));
    }
    result.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_amqp::lapin::BasicProperties;

    fn delivery(rk: &str, body: &[u8], headers: FieldTable) -> Delivery {
        let mut d = Delivery::mock(7, "switchyard.dead".into(), rk.into(), false, body.to_vec());
        d.properties = BasicProperties::default()
            .with_message_id("m".into())
            .with_headers(headers);
        d
    }

    fn payment() -> Lot {
        Lot::Kind(parse_name("payment").unwrap_or_else(|e| panic!("{e}")))
    }

    fn dead(class: &str, failed_ago: chrono::Duration) -> (Delivery, Uuid) {
        let id = Uuid::now_v7();
        let body = serde_json::json!({
            "id": id, "kind": "payment", "provider": "stripe", "operation": "charge",
            "payload": {}, "idempotency_key": "order-42", "created_at": Utc::now(),
        });
        let headers = Headers::default()
            .str(ERROR_CLASS_HEADER, class)
            .str(ERROR_HEADER, "http_400: card declined")
            .int(ATTEMPTS_HEADER, 2)
            .str(FAILED_AT_HEADER, &(Utc::now() - failed_ago).to_rfc3339())
            .str(TRACEPARENT_HEADER, "00-abc-def-01")
            .int("x-delivery-count", 3)
            .build();
        (
            delivery(
                "payment.stripe.charge",
                &serde_json::to_vec(&body).unwrap_or_default(),
                headers,
            ),
            id,
        )
    }

    #[test]
    fn a_dead_letter_is_shown_redacted_and_kept_whole() {
        let body = serde_json::json!({
            "id": Uuid::now_v7(), "kind": "payment", "provider": "stripe", "operation": "charge",
            "payload": {"api-key": "sk_CANARY", "note": "card 4000056655665556",
                        "hook": "https://ops:CANARY_PW@partner.example/h"},
            "idempotency_key": "order-42", "created_at": Utc::now(),
        });
        let raw = serde_json::to_vec(&body).unwrap_or_default();
        let d = delivery("payment.stripe.charge", &raw, Headers::default().build());
        let dl = DeadLetter::read(&payment(), &d);
        let shown = format!(
            "{}\n{}",
            render_show(&dl),
            render_list(&[&dl], Utc::now(), false)
        );
        for canary in ["sk_CANARY", "4000056655665556", "CANARY_PW"] {
            assert!(!shown.contains(canary), "{canary}: {shown}");
        }
        assert_eq!(dl.idempotency_key.as_deref(), Some("order-42"));
        assert_eq!(d.data, raw, "the queue keeps the original for replay");
    }

    #[test]
    fn reads_the_contract_headers_and_the_body() {
        let (d, id) = dead("permanent", chrono::Duration::minutes(5));
        let dl = DeadLetter::read(&payment(), &d);
        assert_eq!(dl.id, Some(id));
        assert_eq!(dl.provider.as_deref(), Some("stripe"));
        assert_eq!(dl.operation.as_deref(), Some("charge"));
        assert_eq!(dl.class.as_deref(), Some("permanent"));
        assert_eq!(dl.attempts, Some(2));
        assert_eq!(dl.idempotency_key.as_deref(), Some("order-42"));
        assert_eq!(dl.traceparent.as_deref(), Some("00-abc-def-01"));
        assert_eq!(dl.replay_routing_key(), "payment.stripe.charge");
        assert!(dl.failed_at.is_some());
    }

    #[test]
    fn garbage_bodies_are_still_listed() {
        let d = delivery(
            "payment.sandbox.charge",
            b"\x00\xffnot json",
            FieldTable::default(),
        );
        let dl = DeadLetter::read(&payment(), &d);
        assert_eq!(dl.id, None);
        assert_eq!(dl.provider.as_deref(), Some("sandbox"));
        assert!(dl.command.is_string());
        assert_eq!(dl.replay_routing_key(), "payment.sandbox.charge");
    }

    #[test]
    fn filters_combine() {
        let now = Utc::now();
        let (d, id) = dead("permanent", chrono::Duration::hours(2));
        let dl = DeadLetter::read(&payment(), &d);
        let f = |f: Filter| f.matches(&dl, now);
        assert!(f(Filter::default()));
        assert!(f(Filter {
            lots: vec![payment()],
            provider: Some(parse_name("stripe").unwrap_or_else(|e| panic!("{e}"))),
            class: Some(ErrorClass::Permanent),
            older_than: Some(Duration::from_secs(3600)),
            newer_than: Some(Duration::from_secs(3 * 3600)),
            id: Some(id),
        }));
        assert!(!f(Filter {
            lots: vec![Lot::Kind(
                parse_name("shipping").unwrap_or_else(|e| panic!("{e}"))
            )],
            ..Default::default()
        }));
        assert!(!f(Filter {
            provider: Some(parse_name("adyen").unwrap_or_else(|e| panic!("{e}"))),
            ..Default::default()
        }));
        assert!(!f(Filter {
            class: Some(ErrorClass::Transient),
            ..Default::default()
        }));
        assert!(!f(Filter {
            older_than: Some(Duration::from_secs(3 * 3600)),
            ..Default::default()
        }));
        assert!(!f(Filter {
            newer_than: Some(Duration::from_secs(60)),
            ..Default::default()
        }));
        assert!(!f(Filter {
            id: Some(Uuid::now_v7()),
            ..Default::default()
        }));
    }

    #[test]
    fn parses_classes_and_ages() {
        assert_eq!(parse_class("timeout"), Ok(ErrorClass::Timeout));
        assert_eq!(parse_class("expired"), Ok(ErrorClass::Expired));
        assert!(parse_class("fatal").is_err_and(|e| e.contains("transient")));
        assert_eq!(parse_age("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_age("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_age("2days"), Ok(Duration::from_secs(2 * 86_400)));
        assert!(parse_age("soon").is_err());
        assert!(parse_name("Payment").is_err());
    }

    #[test]
    fn a_replay_is_a_new_run_without_dead_letter_headers_or_attempts() {
        let (mut d, _) = dead("transient", chrono::Duration::minutes(1));
        let h = Headers::from_table(d.properties.headers().as_ref())
            .str(ROUTING_KEY_HEADER, "payment.stripe.charge")
            .str(KIND_HEADER, "payment")
            .str(SOURCE_HEADER, "ingress")
            .int(ATTEMPT_HEADER, 2)
            .build();
        d.properties = d.properties.clone().with_headers(h);
        let now = Utc::now();
        let replayed = Some(replay_headers(&d, now));
        for gone in [
            ERROR_CLASS_HEADER,
            ERROR_HEADER,
            ATTEMPTS_HEADER,
            FAILED_AT_HEADER,
            ROUTING_KEY_HEADER,
            KIND_HEADER,
            SOURCE_HEADER,
            "x-delivery-count",
        ] {
            assert!(
                replayed
                    .as_ref()
                    .is_some_and(|t| !t.inner().contains_key(gone)),
                "{gone} must go"
            );
        }
        assert_eq!(
            replayed.header_int(ATTEMPT_HEADER),
            None,
            "a fresh retry budget"
        );
        assert_eq!(replayed.header_int(RUN_HEADER), Some(1), "run 0 + 1");
        assert_eq!(
            replayed.header_str(TRACEPARENT_HEADER).as_deref(),
            Some("00-abc-def-01")
        );
        assert!(replayed.header_str(REPLAYED_AT_HEADER).is_some());

        let kept = Some(kept_headers(&d, "payment.stripe.charge"));
        assert_eq!(
            kept.header_str(ERROR_CLASS_HEADER).as_deref(),
            Some("transient")
        );
        assert_eq!(
            kept.header_str(ROUTING_KEY_HEADER).as_deref(),
            Some("payment.stripe.charge")
        );
        assert_eq!(kept.header_int("x-delivery-count"), None);
    }

    #[test]
    fn replay_results_serialize_flat() {
        let refused = Outcome::Refused("no work queue".into());
        let lot = payment();
        let item = Replayed {
            id: None,
            lot: &lot,
            kind: Some("payment"),
            exchange: COMMANDS_EXCHANGE,
            routing_key: "payment.x.charge".into(),
            idempotency_key: Some("k"),
            outcome: &refused,
        };
        let v = serde_json::to_value(&item).unwrap_or_default();
        assert_eq!(v["outcome"], "refused", "{v}");
        assert_eq!(v["reason"], "no work queue", "{v}");
        let done = Outcome::Replayed;
        let v = serde_json::to_value(Replayed {
            outcome: &done,
            ..item
        })
        .unwrap_or_default();
        assert_eq!(v["outcome"], "replayed", "{v}");
        assert_eq!(v["routing_key"], "payment.x.charge", "{v}");
        assert_eq!(v["lot"], "kind:payment", "{v}");
        assert_eq!(v["exchange"], "switchyard.commands", "{v}");
    }

    #[test]
    fn renders_a_table_and_details() {
        let (d, id) = dead("permanent", chrono::Duration::minutes(5));
        let now = Utc::now();
        let dl = DeadLetter::read(&payment(), &d);
        let table = render_list(&[&dl], now, false);
        assert!(table.lines().count() == 2, "{table}");
        for needle in [
            &id.to_string(),
            "stripe",
            "charge",
            "permanent",
            "5m ago",
            "card declined",
        ] {
            assert!(table.contains(needle), "{needle} in {table}");
        }
        let details = render_show(&dl);
        for needle in [
            &id.to_string(),
            "order-42",
            "x-switchyard-error-class",
            "\"payload\"",
        ] {
            assert!(details.contains(needle), "{needle} in {details}");
        }
        let json = serde_json::to_value(&dl).unwrap_or_default();
        assert_eq!(json["class"], "permanent");
        assert_eq!(json["command"]["idempotency_key"], "order-42");
    }

    #[test]
    fn a_second_replay_is_run_two() {
        let (mut d, _) = dead("permanent", chrono::Duration::minutes(1));
        let h = Headers::from_table(d.properties.headers().as_ref())
            .int(RUN_HEADER, 1)
            .build();
        d.properties = d.properties.clone().with_headers(h);
        let dl = DeadLetter::read(&payment(), &d);
        assert_eq!(dl.run, Some(1));
        let replayed = Some(replay_headers(&d, Utc::now()));
        assert_eq!(replayed.header_int(RUN_HEADER), Some(2));
    }

    #[test]
    fn lots_parse_and_name_their_queues() {
        assert_eq!(parse_lot("kind:payment"), Ok(payment()));
        assert_eq!(parse_lot("payment"), Ok(payment()));
        assert_eq!(parse_lot("callbacks"), Ok(Lot::Callbacks));
        assert_eq!(parse_lot("unroutable"), Ok(Lot::Unroutable));
        assert_eq!(parse_lot("ledger"), Ok(Lot::Ledger));
        assert!(parse_lot("kind:Pay").is_err_and(|e| e.contains("unroutable")));
        assert_eq!(payment().queue(), "switchyard.dlq.payment");
        assert_eq!(Lot::Callbacks.queue(), "switchyard.dlq.callbacks");
        assert_eq!(Lot::Unroutable.queue(), "switchyard.dlq.unroutable");
        assert_eq!(Lot::Ledger.queue(), "switchyard.dlq.ledger");
        for lot in [payment(), Lot::Callbacks, Lot::Unroutable, Lot::Ledger] {
            assert_eq!(parse_lot(&lot.to_string()), Ok(lot));
        }
    }

    #[test]
    fn every_lot_replays_where_it_belongs() {
        let now = Utc::now();
        // An unroutable command: its kind and provider come from the body.
        let (d, _) = dead("invalid", chrono::Duration::minutes(1));
        let dl = DeadLetter::read(&Lot::Unroutable, &d);
        assert_eq!(dl.kind.as_deref(), Some("payment"));
        assert_eq!(dl.replay_exchange(), COMMANDS_EXCHANGE);
        assert_eq!(dl.replay_routing_key(), "payment.stripe.charge");
        // A garbage unroutable body: the routing key it came with.
        let g = delivery("fax.acme.send", b"\x00garbage", FieldTable::default());
        let dl = DeadLetter::read(&Lot::Unroutable, &g);
        assert_eq!(dl.kind.as_deref(), Some("fax"));
        assert_eq!(dl.replay_routing_key(), "fax.acme.send");
        // A callback: back to the resolver; its routing key says nothing of a provider.
        let c = delivery(
            CALLBACKS_ROUTING_KEY,
            br#"{"provider":"sandbox","reference":"r1"}"#,
            Headers::default().int(DEFERRALS_HEADER, 9).build(),
        );
        let dl = DeadLetter::read(&Lot::Callbacks, &c);
        assert_eq!(dl.provider.as_deref(), Some("sandbox"));
        assert_eq!(dl.operation, None);
        assert_eq!(dl.run, None);
        assert_eq!(dl.replay_exchange(), CALLBACKS_EXCHANGE);
        assert_eq!(dl.replay_routing_key(), "callbacks.in");
        let resent = Some(resend_headers(&c, now));
        assert_eq!(resent.header_int(DEFERRALS_HEADER), None);
        assert_eq!(resent.header_int(RUN_HEADER), None);
        // A ledger record: back to the queue it came from, through the default exchange.
        let l = delivery(
            "payment.sandbox.completed",
            b"{}",
            Headers::default()
                .str(SOURCE_QUEUE_HEADER, "switchyard.ledger.events")
                .str(ERROR_HEADER, "database refused it")
                .build(),
        );
        let dl = DeadLetter::read(&Lot::Ledger, &l);
        assert_eq!(dl.source_queue.as_deref(), Some("switchyard.ledger.events"));
        assert_eq!(dl.replay_exchange(), "");
        assert_eq!(dl.replay_routing_key(), "switchyard.ledger.events");
        // One the broker dead-lettered names its queue in x-death.
        let mut death = FieldTable::default();
        death.insert(
            "queue".into(),
            AMQPValue::LongString("switchyard.ledger.attempts".into()),
        );
        death.insert(
            "reason".into(),
            AMQPValue::LongString("delivery_limit".into()),
        );
        let mut table = FieldTable::default();
        table.insert(
            "x-death".into(),
            AMQPValue::FieldArray(vec![AMQPValue::FieldTable(death)].into()),
        );
        let b = delivery("ledger.attempts", b"{}", table);
        let dlb = DeadLetter::read(&Lot::Ledger, &b);
        assert_eq!(
            dlb.source_queue.as_deref(),
            Some("switchyard.ledger.attempts")
        );
        assert_eq!(dlb.class_label(), "broker:delivery_limit");
        let resent = Some(resend_headers(&l, now));
        assert_eq!(resent.header_str(SOURCE_QUEUE_HEADER), None);
        assert_eq!(resent.header_str(ERROR_HEADER), None);
        assert!(resent.header_str(REPLAYED_AT_HEADER).is_some());
    }
}
