//! The broker topology of the contract, declared idempotently by every component at start and
//! by `switchyard topology apply`.
//!
//! ```text
//! switchyard.commands (topic, alternate exchange switchyard.unroutable)
//!   nothing matches -> switchyard.unroutable   quorum; every worker consumes it, emits the
//!                      `failed` (unroutable) event and parks the command in
//!                      switchyard.dlq.unroutable (quorum)
//!   {kind}.{provider}.*  -> switchyard.work.{kind}.{provider}   quorum, delivery limit,
//!                                                               dead-letters to switchyard.dead
//! switchyard.retry (headers: kind + tier)
//!   -> switchyard.retry.{kind}.{tier}  quorum, queue TTL = tier, dead-letters back to
//!                                      switchyard.commands with the original routing key
//! switchyard.dead (topic)
//!   {kind}.#  -> switchyard.dlq.{kind}  quorum
//! switchyard.events (topic): the core app binds its own queues
//!   # -> switchyard.ledger.events (and switchyard.attempts # -> switchyard.ledger.attempts)
//!        quorum, delivery limit, dead-letter to switchyard.dead as ledger.events|attempts
//! switchyard.dead ledger.# -> switchyard.dlq.ledger  quorum: what the ledger could not store
//! switchyard.callbacks (direct)
//!   callbacks.in -> switchyard.callbacks  quorum: wait records, verified webhooks, expiries
//!   delayed by switchyard.retry (kind "_callbacks") through switchyard.delay.callbacks.{tier}
//!   dead letters -> switchyard.dlq.callbacks (callbacks nobody could correlate)
//! ```
//!
//! One work queue per (kind, provider) keeps a slow provider from delaying another's commands;
//! one retry queue per delay keeps every message in a queue at the same TTL, so expiry never
//! waits behind a longer delay (no head-of-line blocking).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};
use switchyard_core::Name;

/// Where commands are published.
pub const COMMANDS_EXCHANGE: &str = "switchyard.commands";
/// Where workers publish attempt records (routing key `{kind}.{provider}`).
pub const ATTEMPTS_EXCHANGE: &str = "switchyard.attempts";
/// The ledger's copy of every lifecycle event.
pub const LEDGER_EVENTS_QUEUE: &str = "switchyard.ledger.events";
/// The ledger's copy of every attempt record.
pub const LEDGER_ATTEMPTS_QUEUE: &str = "switchyard.ledger.attempts";
/// Where lifecycle events are published.
pub const EVENTS_EXCHANGE: &str = "switchyard.events";
/// Where wait records, verified callbacks and expiries go, for the resolver.
pub const CALLBACKS_EXCHANGE: &str = "switchyard.callbacks";
/// The resolver's queue.
pub const CALLBACKS_QUEUE: &str = "switchyard.callbacks";
/// The routing key of everything on [`CALLBACKS_EXCHANGE`].
pub const CALLBACKS_ROUTING_KEY: &str = "callbacks.in";
/// The [`KIND_HEADER`] value that sends a delayed message back to [`CALLBACKS_EXCHANGE`]; not
/// a valid kind name, so it can never collide with one.
pub const CALLBACKS_DELAY_KIND: &str = "_callbacks";
/// Callbacks that could never be correlated, and poison messages of the resolver's queue.
pub const CALLBACKS_DLQ: &str = "switchyard.dlq.callbacks";

/// `switchyard.delay.callbacks.{tier}`.
pub fn callbacks_delay_queue(tier: Duration) -> String {
    format!("switchyard.delay.callbacks.{}", tier_label(tier))
}

/// The ledger's dead letters: a message its database refused, isolated from its batch, with
/// the reason (v1.1).
pub const LEDGER_DLQ: &str = "switchyard.dlq.ledger";
/// Unroutable commands after their `failed` (`invalid`, `unroutable`) event: parked for
/// `switchyard dlq` (v1.1).
pub const UNROUTABLE_DLQ: &str = "switchyard.dlq.unroutable";

/// Where commands nobody routes end up, instead of vanishing.
pub const UNROUTABLE_EXCHANGE: &str = "switchyard.unroutable";
/// The queue behind [`UNROUTABLE_EXCHANGE`].
pub const UNROUTABLE_QUEUE: &str = "switchyard.unroutable";
/// Dead letters, routed by the command's routing key to the kind's DLQ.
pub const DEAD_EXCHANGE: &str = "switchyard.dead";
/// Delayed retries, routed by headers to the kind's delay tier.
pub const RETRY_EXCHANGE: &str = "switchyard.retry";
/// Header naming the kind of a delayed retry. Not `x-` prefixed on purpose: the headers
/// exchange ignores `x-` binding arguments when matching, which would copy every retry into
/// every tier.
pub const KIND_HEADER: &str = "switchyard-retry-kind";
/// Header naming the delay tier of a delayed retry.
pub const TIER_HEADER: &str = "switchyard-retry-tier";

/// `switchyard.work.{kind}.{provider}`.
pub fn work_queue(kind: &Name, provider: &Name) -> String {
    format!("switchyard.work.{kind}.{provider}")
}

/// `switchyard.dlq.{kind}`.
pub fn dead_letter_queue(kind: &Name) -> String {
    format!("switchyard.dlq.{kind}")
}

/// `switchyard.abandoned.{kind}`: a copy of every dead letter of the kind, for its workers,
/// which give an outcome to the commands the broker dead-lettered on its own (at a work
/// queue's delivery limit) and drop the rest.
pub fn abandoned_queue(kind: &Name) -> String {
    format!("switchyard.abandoned.{kind}")
}

/// `switchyard.retry.{kind}.{tier}`.
pub fn retry_queue(kind: &Name, tier: Duration) -> String {
    format!("switchyard.retry.{kind}.{}", tier_label(tier))
}

/// A compact, stable label for a delay: `250ms`, `5s`, `2m`, `1h`.
pub fn tier_label(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// What a component needs declared.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    providers: BTreeMap<Name, BTreeSet<Name>>,
    tiers: Vec<Duration>,
    delivery_limit: u32,
    taps: Vec<(String, String)>,
    ledger: bool,
}

fn args(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v.as_bytes().to_vec()))
}

impl Topology {
    /// An empty topology: the shared exchanges only.
    pub fn new(tiers: Vec<Duration>, delivery_limit: u32) -> Self {
        Self {
            providers: BTreeMap::new(),
            tiers,
            delivery_limit,
            taps: Vec::new(),
            ledger: false,
        }
    }

    /// Declares the ledger's durable quorum queues on `switchyard.events` and
    /// `switchyard.attempts`, so records wait for the ledger while it is down.
    pub fn with_ledger(mut self, enabled: bool) -> Self {
        self.ledger = enabled;
        self
    }

    /// Adds a subscriber queue on `switchyard.events` with `binding` (e.g. `payment.#`). It is
    /// durable, so it survives broker restarts, and expires after ten idle minutes, so
    /// short-lived subscribers (tests, `switchyard up`) leave nothing behind.
    pub fn with_event_tap(mut self, queue: impl Into<String>, binding: impl Into<String>) -> Self {
        self.taps.push((queue.into(), binding.into()));
        self
    }

    /// Adds a kind (its DLQ and delay tiers) without providers.
    pub fn with_kind(mut self, kind: &Name) -> Self {
        self.providers.entry(kind.clone()).or_default();
        self
    }

    /// Adds the work queue of a provider (and its kind).
    pub fn with_provider(mut self, kind: &Name, provider: &Name) -> Self {
        self.providers
            .entry(kind.clone())
            .or_default()
            .insert(provider.clone());
        self
    }

    /// The delay tiers, shortest first.
    pub fn tiers(&self) -> &[Duration] {
        &self.tiers
    }

    /// The kinds and their providers.
    pub fn providers(&self) -> &BTreeMap<Name, BTreeSet<Name>> {
        &self.providers
    }

    /// The resolver's side: its exchange, queue, delay tiers and dead letters.
    fn plan_callbacks(
        &self,
        plan: &mut Vec<Declaration>,
        quorum: &(&str, AMQPValue),
        at_least_once: &[(&str, AMQPValue)],
    ) {
        plan.push(Declaration::exchange(
            CALLBACKS_EXCHANGE,
            ExchangeKind::Direct,
            FieldTable::default(),
        ));
        let mut a = vec![
            quorum.clone(),
            (
                "x-delivery-limit",
                AMQPValue::LongLongInt(i64::from(self.delivery_limit)),
            ),
            ("x-dead-letter-exchange", s(DEAD_EXCHANGE)),
        ];
        a.extend(at_least_once.iter().cloned());
        plan.push(Declaration::queue(CALLBACKS_QUEUE, args(&a)));
        plan.push(Declaration::binding(
            CALLBACKS_QUEUE,
            CALLBACKS_EXCHANGE,
            CALLBACKS_ROUTING_KEY,
            FieldTable::default(),
        ));
        plan.push(Declaration::queue(
            CALLBACKS_DLQ,
            args(std::slice::from_ref(quorum)),
        ));
        plan.push(Declaration::binding(
            CALLBACKS_DLQ,
            DEAD_EXCHANGE,
            "callbacks.#",
            FieldTable::default(),
        ));
        self.plan_delay_tiers(
            plan,
            CALLBACKS_DELAY_KIND,
            callbacks_delay_queue,
            CALLBACKS_EXCHANGE,
            quorum,
            at_least_once,
        );
    }

    /// One TTL queue per delay tier, bound on `switchyard.retry` by (`lane`, tier) and
    /// dead-lettering to `target` with the message's own routing key when the delay is over.
    fn plan_delay_tiers(
        &self,
        plan: &mut Vec<Declaration>,
        lane: &str,
        queue_name: impl Fn(Duration) -> String,
        target: &str,
        quorum: &(&str, AMQPValue),
        at_least_once: &[(&str, AMQPValue)],
    ) {
        for tier in &self.tiers {
            let q = queue_name(*tier);
            let ttl = i64::try_from(tier.as_millis()).unwrap_or(i64::MAX);
            let mut a = vec![
                quorum.clone(),
                ("x-message-ttl", AMQPValue::LongLongInt(ttl)),
                ("x-dead-letter-exchange", s(target)),
            ];
            a.extend(at_least_once.iter().cloned());
            plan.push(Declaration::queue(&q, args(&a)));
            plan.push(Declaration::binding(
                &q,
                RETRY_EXCHANGE,
                "",
                args(&[
                    ("x-match", s("all")),
                    (KIND_HEADER, s(lane)),
                    (TIER_HEADER, s(&tier_label(*tier))),
                ]),
            ));
        }
    }

    /// Everything this topology declares, in declaration order: the single description that
    /// [`Topology::declare`] applies and `switchyard topology check` compares with a broker.
    pub fn plan(&self) -> Vec<Declaration> {
        let quorum = ("x-queue-type", s("quorum"));
        let at_least_once = [
            ("x-dead-letter-strategy", s("at-least-once")),
            ("x-overflow", s("reject-publish")),
        ];
        let mut plan = vec![
            Declaration::exchange(
                UNROUTABLE_EXCHANGE,
                ExchangeKind::Fanout,
                FieldTable::default(),
            ),
            Declaration::queue(UNROUTABLE_QUEUE, args(std::slice::from_ref(&quorum))),
            Declaration::binding(
                UNROUTABLE_QUEUE,
                UNROUTABLE_EXCHANGE,
                "",
                FieldTable::default(),
            ),
            // Where the workers park what nobody routes, after its `failed` event.
            Declaration::queue(UNROUTABLE_DLQ, args(std::slice::from_ref(&quorum))),
            Declaration::exchange(
                COMMANDS_EXCHANGE,
                ExchangeKind::Topic,
                args(&[("alternate-exchange", s(UNROUTABLE_EXCHANGE))]),
            ),
        ];
        for exchange in [EVENTS_EXCHANGE, DEAD_EXCHANGE, ATTEMPTS_EXCHANGE] {
            plan.push(Declaration::exchange(
                exchange,
                ExchangeKind::Topic,
                FieldTable::default(),
            ));
        }
        if self.ledger {
            // A message the ledger keeps failing on (a crash loop) ends in its dead letters
            // after the delivery limit, instead of coming back forever.
            plan.push(Declaration::queue(
                LEDGER_DLQ,
                args(std::slice::from_ref(&quorum)),
            ));
            plan.push(Declaration::binding(
                LEDGER_DLQ,
                DEAD_EXCHANGE,
                "ledger.#",
                FieldTable::default(),
            ));
            for (queue, exchange, dead_key) in [
                (LEDGER_EVENTS_QUEUE, EVENTS_EXCHANGE, "ledger.events"),
                (LEDGER_ATTEMPTS_QUEUE, ATTEMPTS_EXCHANGE, "ledger.attempts"),
            ] {
                let mut a = vec![
                    quorum.clone(),
                    (
                        "x-delivery-limit",
                        AMQPValue::LongLongInt(i64::from(self.delivery_limit)),
                    ),
                    ("x-dead-letter-exchange", s(DEAD_EXCHANGE)),
                    ("x-dead-letter-routing-key", s(dead_key)),
                ];
                a.extend(at_least_once.iter().cloned());
                plan.push(Declaration::queue(queue, args(&a)));
                plan.push(Declaration::binding(
                    queue,
                    exchange,
                    "#",
                    FieldTable::default(),
                ));
            }
        }
        plan.push(Declaration::exchange(
            RETRY_EXCHANGE,
            ExchangeKind::Headers,
            FieldTable::default(),
        ));
        self.plan_callbacks(&mut plan, &quorum, &at_least_once);

        for (kind, providers) in &self.providers {
            let dlq = dead_letter_queue(kind);
            plan.push(Declaration::queue(
                &dlq,
                args(std::slice::from_ref(&quorum)),
            ));
            plan.push(Declaration::binding(
                &dlq,
                DEAD_EXCHANGE,
                &format!("{kind}.#"),
                FieldTable::default(),
            ));
            // Beside the DLQ, on the same binding. Its own delivery limit, without a dead-letter
            // exchange: a copy the workers keep failing on is dropped (the DLQ keeps the
            // original), so it cannot loop.
            let abandoned = abandoned_queue(kind);
            plan.push(Declaration::queue(
                &abandoned,
                args(&[
                    quorum.clone(),
                    (
                        "x-delivery-limit",
                        AMQPValue::LongLongInt(i64::from(self.delivery_limit)),
                    ),
                ]),
            ));
            plan.push(Declaration::binding(
                &abandoned,
                DEAD_EXCHANGE,
                &format!("{kind}.#"),
                FieldTable::default(),
            ));

            self.plan_delay_tiers(
                &mut plan,
                kind.as_str(),
                |tier| retry_queue(kind, tier),
                COMMANDS_EXCHANGE,
                &quorum,
                &at_least_once,
            );

            for provider in providers {
                let q = work_queue(kind, provider);
                let mut a = vec![
                    quorum.clone(),
                    (
                        "x-delivery-limit",
                        AMQPValue::LongLongInt(i64::from(self.delivery_limit)),
                    ),
                    ("x-dead-letter-exchange", s(DEAD_EXCHANGE)),
                ];
                a.extend(at_least_once.iter().cloned());
                plan.push(Declaration::queue(&q, args(&a)));
                plan.push(Declaration::binding(
                    &q,
                    COMMANDS_EXCHANGE,
                    &format!("{kind}.{provider}.*"),
                    FieldTable::default(),
                ));
            }
        }
        for (queue, binding) in &self.taps {
            plan.push(Declaration::queue(
                queue,
                args(&[("x-expires", AMQPValue::LongLongInt(600_000))]),
            ));
            plan.push(Declaration::binding(
                queue,
                EVENTS_EXCHANGE,
                binding,
                FieldTable::default(),
            ));
        }
        plan
    }

    /// Declares everything; safe to repeat.
    pub async fn declare(&self, ch: &Channel) -> Result<(), lapin::Error> {
        for d in self.plan() {
            d.declare(ch).await?;
        }
        Ok(())
    }
}

/// One exchange, queue or binding of the topology. Every exchange and queue is durable; no
/// queue is exclusive or auto-deleted.
#[derive(Debug, Clone, PartialEq)]
pub enum Declaration {
    /// A durable exchange.
    Exchange {
        /// Its name.
        name: String,
        /// Its type.
        kind: ExchangeKind,
        /// Its arguments (e.g. `alternate-exchange`).
        arguments: FieldTable,
    },
    /// A durable queue.
    Queue {
        /// Its name.
        name: String,
        /// Its arguments (`x-queue-type`, `x-delivery-limit`, ...).
        arguments: FieldTable,
    },
    /// A binding of a queue to an exchange.
    Binding {
        /// The queue.
        queue: String,
        /// The exchange.
        exchange: String,
        /// The binding key.
        routing_key: String,
        /// The binding arguments (headers exchanges match on them).
        arguments: FieldTable,
    },
}

impl Declaration {
    fn exchange(name: &str, kind: ExchangeKind, arguments: FieldTable) -> Self {
        Self::Exchange {
            name: name.to_owned(),
            kind,
            arguments,
        }
    }

    fn queue(name: &str, arguments: FieldTable) -> Self {
        Self::Queue {
            name: name.to_owned(),
            arguments,
        }
    }

    fn binding(queue: &str, exchange: &str, routing_key: &str, arguments: FieldTable) -> Self {
        Self::Binding {
            queue: queue.to_owned(),
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            arguments,
        }
    }

    /// Declares it on `ch` (idempotent; a mismatch with what exists closes the channel with
    /// `PRECONDITION_FAILED`).
    pub async fn declare(&self, ch: &Channel) -> Result<(), lapin::Error> {
        match self {
            Self::Exchange {
                name,
                kind,
                arguments,
            } => {
                ch.exchange_declare(
                    name.as_str().into(),
                    kind.clone(),
                    ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    arguments.clone(),
                )
                .await
            }
            Self::Queue { name, arguments } => ch
                .queue_declare(
                    name.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    arguments.clone(),
                )
                .await
                .map(|_| ()),
            Self::Binding {
                queue,
                exchange,
                routing_key,
                arguments,
            } => {
                ch.queue_bind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    routing_key.as_str().into(),
                    QueueBindOptions::default(),
                    arguments.clone(),
                )
                .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_labels_are_compact() {
        assert_eq!(tier_label(Duration::from_millis(250)), "250ms");
        assert_eq!(tier_label(Duration::from_secs(5)), "5s");
        assert_eq!(tier_label(Duration::from_secs(120)), "2m");
        assert_eq!(tier_label(Duration::from_secs(3600)), "1h");
        assert_eq!(tier_label(Duration::from_secs(90)), "90s");
    }

    #[test]
    fn the_ledger_queues_have_a_delivery_limit_and_dead_letters() {
        let plan = Topology::new(vec![Duration::from_secs(1)], 7)
            .with_ledger(true)
            .plan();
        let queue = |n: &str| {
            plan.iter()
                .find_map(|d| match d {
                    Declaration::Queue { name, arguments } if name == n => Some(arguments.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("{n} declared"))
        };
        for (q, key) in [
            (LEDGER_EVENTS_QUEUE, "ledger.events"),
            (LEDGER_ATTEMPTS_QUEUE, "ledger.attempts"),
        ] {
            let a = queue(q);
            let a = a.inner();
            assert_eq!(
                a.get("x-delivery-limit"),
                Some(&AMQPValue::LongLongInt(7)),
                "{q}"
            );
            assert_eq!(a.get("x-dead-letter-exchange"), Some(&s(DEAD_EXCHANGE)));
            assert_eq!(a.get("x-dead-letter-routing-key"), Some(&s(key)));
        }
        queue(LEDGER_DLQ);
        assert!(plan.iter().any(|d| matches!(d,
            Declaration::Binding { queue, exchange, routing_key, .. }
                if queue == LEDGER_DLQ && exchange == DEAD_EXCHANGE && routing_key == "ledger.#")));
        let without = Topology::new(vec![], 7).plan();
        assert!(!without.iter().any(|d| matches!(d,
            Declaration::Queue { name, .. } if name == LEDGER_DLQ)));
    }

    #[test]
    fn the_plan_declares_each_kind_and_provider() {
        let k: Name = "payment".parse().unwrap();
        let p: Name = "stripe".parse().unwrap();
        let plan = Topology::new(vec![Duration::from_secs(1)], 5)
            .with_provider(&k, &p)
            .plan();
        let queues: Vec<&str> = plan
            .iter()
            .filter_map(|d| match d {
                Declaration::Queue { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect();
        for q in [
            "switchyard.unroutable",
            "switchyard.dlq.unroutable",
            "switchyard.callbacks",
            "switchyard.dlq.payment",
            "switchyard.abandoned.payment",
            "switchyard.retry.payment.1s",
            "switchyard.work.payment.stripe",
        ] {
            assert!(queues.contains(&q), "{q} in {queues:?}");
        }
        // Exchanges come before anything bound to them.
        let position = |f: &dyn Fn(&Declaration) -> bool| plan.iter().position(f).unwrap();
        let commands = position(
            &|d| matches!(d, Declaration::Exchange { name, .. } if name == COMMANDS_EXCHANGE),
        );
        let work_binding = position(
            &|d| matches!(d, Declaration::Binding { exchange, .. } if exchange == COMMANDS_EXCHANGE),
        );
        assert!(commands < work_binding);
    }

    #[test]
    fn names_derive_from_the_kind() {
        let k: Name = "payment".parse().unwrap();
        let p: Name = "stripe".parse().unwrap();
        assert_eq!(work_queue(&k, &p), "switchyard.work.payment.stripe");
        assert_eq!(dead_letter_queue(&k), "switchyard.dlq.payment");
        assert_eq!(abandoned_queue(&k), "switchyard.abandoned.payment");
        assert_eq!(
            retry_queue(&k, Duration::from_secs(30)),
            "switchyard.retry.payment.30s"
        );
    }
}
