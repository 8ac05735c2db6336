//! The ceiling: Switchyard's broker traffic per command, produced by a bare lapin program in
//! the bench's own process, on the same broker, with no Switchyard logic in it (no decoding,
//! validation, journal, HTTP call, redaction or ledger writes). What Switchyard reaches as a
//! fraction of it is what its own work costs; the broker's share is the rest.
//!
//! Per command, as the `switchyard-payment` worker does (see the worker's `handler.rs`): the
//! command is published persistent, mandatory and confirmed through a topic exchange to a
//! durable quorum work queue; a consumer with the worker's prefetch takes it, publishes the
//! messages the probe saw the worker publish for one command (same routing keys, properties,
//! headers and bodies; the first ones while the provider answers, then the attempt records
//! together, then the outcome), each persistent and confirmed, and only then acks. The
//! provider answers in-process at once (after `answer_after`, when the run emulates a slow
//! provider). A consumer of the `completed` events measures end-to-end latency.
//!
//! Everything it declares is named `switchyard.ceiling.{random}.*` and deleted afterwards.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use hdrhistogram::Histogram;
use switchyard_amqp::lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use switchyard_amqp::lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use switchyard_amqp::lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer,
    ExchangeKind, PublisherConfirm,
};
use switchyard_amqp::topology::ATTEMPTS_EXCHANGE;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Where in the worker's sequence a message is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Before the provider's answer is used (`pending`, `processing`): in order on the
    /// channel, confirmed together, while the provider is called.
    Report,
    /// The attempt records, published together as soon as the provider answered (while the
    /// reports may still be unconfirmed).
    Record,
    /// After the reports and the records are confirmed (the outcome event), one after the
    /// other; then the ack.
    Outcome,
}

/// One message the worker publishes per command, as the probe saw it.
#[derive(Debug, Clone)]
pub struct Message {
    /// The exchange Switchyard published it to.
    pub exchange: String,
    /// Its routing key.
    pub routing_key: String,
    /// Its properties, headers included.
    pub properties: BasicProperties,
    /// Its body.
    pub body: Vec<u8>,
    /// When it is published.
    pub step: Step,
    /// The `completed` event, which the ceiling's consumer times: it carries the command's
    /// id as its message id (same length as the event id it replaces).
    pub terminal: bool,
}

impl Message {
    /// A message the probe saw, filed by what it is, not by when it arrived: the worker
    /// publishes its attempt records while `processing` is still being confirmed, so either
    /// may reach the broker first.
    pub fn filed(
        exchange: String,
        routing_key: String,
        properties: BasicProperties,
        body: Vec<u8>,
    ) -> Self {
        let record = exchange == ATTEMPTS_EXCHANGE;
        let terminal = !record && routing_key.ends_with(".completed");
        let step = match (record, terminal) {
            (true, _) => Step::Record,
            (false, true) => Step::Outcome,
            (false, false) => Step::Report,
        };
        Self {
            exchange,
            routing_key,
            properties,
            body,
            step,
            terminal,
        }
    }
}

/// The probe's messages in the worker's order: reports, records, outcome (a stable sort, so
/// `pending` stays before `processing`, as they arrived on the worker's one channel).
pub fn in_worker_order(mut messages: Vec<Message>) -> Vec<Message> {
    messages.sort_by_key(|m| m.step);
    messages
}

/// What one command costs on the broker: the command itself and what the worker publishes.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// The command's routing key, `{kind}.{provider}.{operation}`.
    pub command_routing_key: String,
    /// The command's properties (persistent, JSON, message id, type, timestamp).
    pub command_properties: BasicProperties,
    /// The command's body.
    pub command_body: Vec<u8>,
    /// The worker's messages by step: reports, records, outcome.
    pub messages: Vec<Message>,
}

impl Pattern {
    /// `kind.provider`, the prefix every routing key of the pattern starts with.
    fn lane(&self) -> String {
        self.command_routing_key
            .rsplit_once('.')
            .map(|(lane, _)| lane.to_owned())
            .unwrap_or_default()
    }
}

/// How a ceiling run drives the broker.
#[derive(Debug, Clone)]
pub struct CeilingOptions {
    /// Commands to send.
    pub commands: usize,
    /// Publishes awaiting their confirm at once.
    pub window: usize,
    /// The consumer's prefetch (the worker's: twice its concurrency).
    pub prefetch: u16,
    /// Commands per second to offer; 0: as fast as confirms allow.
    pub rate: u32,
    /// How long the in-process provider takes to answer.
    pub answer_after: Duration,
    /// Also copy every event and record into two quorum queues drained by a bare consumer,
    /// as the ledger's queues are when the ledger runs.
    pub ledger_copies: bool,
}

/// The figures of one ceiling run.
#[derive(Debug)]
pub struct CeilingRun {
    /// Commands whose `completed` event arrived.
    pub completed: usize,
    /// From the first publish to the last `completed` event, in seconds.
    pub elapsed: f64,
    /// End-to-end latency, in microseconds.
    pub hist: Histogram<u64>,
}

struct Names {
    commands: String,
    events: String,
    attempts: String,
    dead: String,
    work: String,
    tap: String,
    ledger_events: String,
    ledger_attempts: String,
}

impl Names {
    fn new() -> Self {
        let id = Uuid::new_v4().simple().to_string();
        let p = format!("switchyard.ceiling.{}", &id[..12]);
        Self {
            commands: format!("{p}.commands"),
            events: format!("{p}.events"),
            attempts: format!("{p}.attempts"),
            dead: format!("{p}.dead"),
            work: format!("{p}.work"),
            tap: format!("{p}.tap"),
            ledger_events: format!("{p}.ledger.events"),
            ledger_attempts: format!("{p}.ledger.attempts"),
        }
    }

    /// The ceiling's exchange standing for one of Switchyard's.
    fn exchange_for(&self, switchyard: &str) -> &str {
        if switchyard == ATTEMPTS_EXCHANGE {
            &self.attempts
        } else {
            &self.events
        }
    }
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

/// The arguments Switchyard gives its work and ledger queues.
fn quorum_args(dead: &str, dead_key: Option<&str>) -> FieldTable {
    let mut args = vec![
        ("x-queue-type", text("quorum")),
        ("x-delivery-limit", AMQPValue::LongLongInt(5)),
        ("x-dead-letter-exchange", text(dead)),
        ("x-dead-letter-strategy", text("at-least-once")),
        ("x-overflow", text("reject-publish")),
    ];
    if let Some(key) = dead_key {
        args.push(("x-dead-letter-routing-key", text(key)));
    }
    table(&args)
}

async fn declare(ch: &Channel, n: &Names, lane: &str, ledger: bool) -> anyhow::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for ex in [&n.commands, &n.events, &n.attempts, &n.dead] {
        ch.exchange_declare(
            ex.as_str().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
    }
    let queue = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let bind = |q: &str, ex: &str, key: &str| {
        let (q, ex, key) = (q.to_owned(), ex.to_owned(), key.to_owned());
        let ch = ch.clone();
        async move {
            ch.queue_bind(
                q.as_str().into(),
                ex.as_str().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
        }
    };
    ch.queue_declare(n.work.as_str().into(), queue, quorum_args(&n.dead, None))
        .await?;
    bind(&n.work, &n.commands, &format!("{lane}.*")).await?;
    // Like the bench's event tap: a classic queue that expires when left behind.
    ch.queue_declare(
        n.tap.as_str().into(),
        queue,
        table(&[("x-expires", AMQPValue::LongLongInt(600_000))]),
    )
    .await?;
    for status in ["completed", "waiting", "failed"] {
        bind(&n.tap, &n.events, &format!("{lane}.{status}")).await?;
    }
    if ledger {
        for (q, ex, key) in [
            (&n.ledger_events, &n.events, "ledger.events"),
            (&n.ledger_attempts, &n.attempts, "ledger.attempts"),
        ] {
            ch.queue_declare(q.as_str().into(), queue, quorum_args(&n.dead, Some(key)))
                .await?;
            bind(q, ex, "#").await?;
        }
    }
    Ok(())
}

/// Deletes what [`declare`] made, on a channel of its own (a failure closes a channel).
async fn delete(conn: &Connection, n: &Names) -> Vec<String> {
    let mut problems = Vec::new();
    let ch = match conn.create_channel().await {
        Ok(ch) => ch,
        Err(e) => return vec![format!("no channel to clean up with: {e}")],
    };
    for q in [&n.work, &n.tap, &n.ledger_events, &n.ledger_attempts] {
        if let Err(e) = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
        {
            problems.push(format!("{q}: {e}"));
        }
    }
    for ex in [&n.commands, &n.events, &n.attempts, &n.dead] {
        if let Err(e) = ch
            .exchange_delete(ex.as_str().into(), ExchangeDeleteOptions::default())
            .await
        {
            problems.push(format!("{ex}: {e}"));
        }
    }
    let _ = ch.close(200, "done".into()).await;
    problems
}

fn properties(name: &str) -> ConnectionProperties {
    ConnectionProperties::default().with_connection_name(name.into())
}

async fn confirmed(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    mandatory: bool,
    body: &[u8],
    properties: BasicProperties,
) -> anyhow::Result<()> {
    let confirmation = ch
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory,
                immediate: false,
            },
            body,
            properties,
        )
        .await?
        .await?;
    acked(confirmation)
}

fn acked(confirmation: Confirmation) -> anyhow::Result<()> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        other => Err(anyhow!("not confirmed: {other:?}")),
    }
}

/// One message ready to publish on the ceiling's exchanges.
struct Out {
    exchange: String,
    message: Message,
}

fn properties_for(out: &Out, command_id: Option<&ShortString>) -> BasicProperties {
    let props = out.message.properties.clone();
    match command_id {
        Some(id) if out.message.terminal => props.with_message_id(id.clone()),
        _ => props,
    }
}

async fn publish(ch: &Channel, out: &Out, command_id: Option<&ShortString>) -> anyhow::Result<()> {
    acked(send(ch, out, command_id).await?.await?)
}

/// Hands one message to the channel; the caller awaits its confirm.
async fn send(
    ch: &Channel,
    out: &Out,
    command_id: Option<&ShortString>,
) -> anyhow::Result<PublisherConfirm> {
    Ok(ch
        .basic_publish(
            out.exchange.as_str().into(),
            out.message.routing_key.as_str().into(),
            BasicPublishOptions::default(),
            &out.message.body,
            properties_for(out, command_id),
        )
        .await?)
}

/// What the worker does with one delivery, minus everything Switchyard decides.
async fn work(
    d: switchyard_amqp::Delivery,
    ch: Channel,
    outs: Arc<Vec<Out>>,
    answer_after: Duration,
) -> anyhow::Result<()> {
    let id = d.properties.message_id().clone();
    let at = |step: Step| outs.iter().filter(move |o| o.message.step == step);
    let report = async {
        // In order on the channel, confirmed together, as the worker does.
        let mut confirms = Vec::new();
        for o in at(Step::Report) {
            confirms.push(send(&ch, o, id.as_ref()).await?);
        }
        for c in confirms {
            acked(c.await?)?;
        }
        Ok::<_, anyhow::Error>(())
    };
    let answered = async {
        if !answer_after.is_zero() {
            tokio::time::sleep(answer_after).await;
        }
        futures::future::try_join_all(at(Step::Record).map(|o| publish(&ch, o, id.as_ref()))).await
    };
    let (reported, recorded) = tokio::join!(report, answered);
    reported?;
    recorded?;
    for o in at(Step::Outcome) {
        publish(&ch, o, id.as_ref()).await?;
    }
    d.acker.ack(BasicAckOptions::default()).await?;
    Ok(())
}

async fn consumer(ch: &Channel, queue: &str, prefetch: u16) -> anyhow::Result<Consumer> {
    ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    Ok(ch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?)
}

/// Runs one ceiling measurement against the broker at `url`.
pub async fn run(
    url: &str,
    pattern: &Pattern,
    opts: &CeilingOptions,
) -> anyhow::Result<CeilingRun> {
    let names = Names::new();
    let admin = Connection::connect(url, properties("switchyard-ceiling-admin"))
        .await
        .context("ceiling: connecting to the broker")?;
    let declared = match admin.create_channel().await {
        Ok(ch) => {
            let r = declare(&ch, &names, &pattern.lane(), opts.ledger_copies).await;
            let _ = ch.close(200, "done".into()).await;
            r
        }
        Err(e) => Err(e.into()),
    };
    let result = match declared {
        Ok(()) => drive(url, pattern, opts, &names).await,
        Err(e) => Err(e.context("ceiling: declaring its exchanges and queues")),
    };
    let problems = delete(&admin, &names).await;
    let _ = admin.close(200, "done".into()).await;
    if !problems.is_empty() {
        super::note(format!(
            "bench: ceiling: could not delete {}",
            problems.join("; ")
        ));
    }
    result
}

async fn drive(
    url: &str,
    pattern: &Pattern,
    opts: &CeilingOptions,
    names: &Names,
) -> anyhow::Result<CeilingRun> {
    // One connection standing for the core app (publisher and event consumer), one for the
    // worker, one for the ledger's copies: as many as the processes they stand for.
    let app = Connection::connect(url, properties("switchyard-ceiling-app")).await?;
    let worker = Connection::connect(url, properties("switchyard-ceiling-worker")).await?;
    let stop = CancellationToken::new();
    let failures = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();

    let outs: Arc<Vec<Out>> = Arc::new(
        pattern
            .messages
            .iter()
            .map(|m| Out {
                exchange: names.exchange_for(&m.exchange).to_owned(),
                message: m.clone(),
            })
            .collect(),
    );
    let publish_ch = worker.create_channel().await?;
    publish_ch
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let consume_ch = worker.create_channel().await?;
    let mut work_queue = consumer(&consume_ch, &names.work, opts.prefetch).await?;
    {
        let (stop, failures, answer_after) = (stop.clone(), failures.clone(), opts.answer_after);
        tasks.spawn(async move {
            let mut inflight = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
                    next = work_queue.next() => match next {
                        Some(Ok(d)) => {
                            let (ch, outs, failures) = (publish_ch.clone(), outs.clone(), failures.clone());
                            inflight.spawn(async move {
                                if work(d, ch, outs, answer_after).await.is_err() {
                                    failures.fetch_add(1, Ordering::Relaxed);
                                }
                            });
                        }
                        _ => break,
                    },
                }
            }
            inflight.abort_all();
        });
    }

    let ledger = if opts.ledger_copies {
        let conn = Connection::connect(url, properties("switchyard-ceiling-ledger")).await?;
        // As the ledger takes them: batches of at most `batch_size` deliveries, or what came
        // within `batch_max_wait_ms` of the first, each settled by one `multiple` ack.
        let ledger = switchyard_config::LedgerConfig::default();
        let (size, max_wait) = (
            ledger.batch_size,
            Duration::from_millis(ledger.batch_max_wait_ms),
        );
        let prefetch = u16::try_from(size * 2).unwrap_or(u16::MAX);
        for q in [&names.ledger_events, &names.ledger_attempts] {
            let ch = conn.create_channel().await?;
            let mut copies = consumer(&ch, q, prefetch).await?;
            let stop = stop.clone();
            tasks.spawn(async move {
                let multiple = BasicAckOptions { multiple: true };
                loop {
                    let mut last = tokio::select! {
                        _ = stop.cancelled() => break,
                        next = copies.next() => match next {
                            Some(Ok(d)) => d,
                            _ => break,
                        },
                    };
                    let deadline = tokio::time::Instant::now() + max_wait;
                    for _ in 1..size {
                        match tokio::time::timeout_at(deadline, copies.next()).await {
                            Ok(Some(Ok(d))) => last = d,
                            _ => break,
                        }
                    }
                    let _ = last.acker.ack(multiple).await;
                }
            });
        }
        Some(conn)
    } else {
        None
    };

    let (tx, mut rx) = mpsc::unbounded_channel::<(ShortString, Instant)>();
    let tap_ch = app.create_channel().await?;
    let mut tap = consumer(&tap_ch, &names.tap, 1000).await?;
    {
        let stop = stop.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    next = tap.next() => match next {
                        Some(Ok(d)) => {
                            let at = Instant::now();
                            if let Some(id) = d.properties.message_id() {
                                let _ = tx.send((id.clone(), at));
                            }
                            let _ = d.acker.ack(BasicAckOptions::default()).await;
                        }
                        _ => break,
                    },
                }
            }
        });
    }

    let app_ch = app.create_channel().await?;
    app_ch
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let sent: Arc<Mutex<HashMap<ShortString, Instant>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(opts.commands)));
    let started = Instant::now();
    let publishing = {
        let (sent, commands_ex, opts) = (sent.clone(), names.commands.clone(), opts.clone());
        let (rk, props, body) = (
            pattern.command_routing_key.clone(),
            pattern.command_properties.clone(),
            Arc::new(pattern.command_body.clone()),
        );
        tokio::spawn(async move {
            let window = Arc::new(Semaphore::new(opts.window.max(1)));
            let mut pending = tokio::task::JoinSet::new();
            let mut pace = (opts.rate > 0).then(|| {
                let mut i =
                    tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(opts.rate)));
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                i
            });
            for _ in 0..opts.commands {
                if let Some(p) = pace.as_mut() {
                    p.tick().await;
                }
                let Ok(permit) = window.clone().acquire_owned().await else {
                    break;
                };
                let id = ShortString::from(Uuid::now_v7().to_string());
                if let Ok(mut s) = sent.lock() {
                    s.insert(id.clone(), Instant::now());
                }
                let (ch, ex, rk, body) = (
                    app_ch.clone(),
                    commands_ex.clone(),
                    rk.clone(),
                    body.clone(),
                );
                let props = props.clone().with_message_id(id);
                pending.spawn(async move {
                    let r = confirmed(&ch, &ex, &rk, true, &body, props).await;
                    drop(permit);
                    r
                });
            }
            let mut failed = 0usize;
            while let Some(r) = pending.join_next().await {
                if !matches!(r, Ok(Ok(()))) {
                    failed += 1;
                }
            }
            failed
        })
    };

    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut completed = 0usize;
    let mut last = started;
    let overall = Instant::now()
        + Duration::from_secs(300)
        + Duration::from_millis(opts.commands as u64 * 10);
    while completed < opts.commands {
        if failures.load(Ordering::Relaxed) > 0 {
            break;
        }
        let next = tokio::time::timeout_at(
            tokio::time::Instant::now() + Duration::from_secs(1),
            rx.recv(),
        )
        .await;
        let (id, at) = match next {
            Ok(Some(x)) => x,
            Ok(None) => break,
            Err(_) if Instant::now() < overall => continue,
            Err(_) => break,
        };
        let Some(sent_at) = sent.lock().ok().and_then(|mut s| s.remove(&id)) else {
            continue;
        };
        completed += 1;
        let _ = hist.record(at.duration_since(sent_at).as_micros() as u64);
        last = at;
    }
    let publish_failures = publishing.await.unwrap_or(opts.commands);
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    for conn in [Some(app), Some(worker), ledger].into_iter().flatten() {
        let _ = conn.close(200, "done".into()).await;
    }
    let worker_failures = failures.load(Ordering::Relaxed);
    if completed < opts.commands {
        bail!(
            "ceiling: {} of {} commands did not complete ({publish_failures} publishes and \
             {worker_failures} deliveries failed)",
            opts.commands - completed,
            opts.commands
        );
    }
    Ok(CeilingRun {
        completed,
        elapsed: last.duration_since(started).as_secs_f64().max(1e-9),
        hist,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use switchyard_amqp::topology::EVENTS_EXCHANGE;

    fn arrived(exchange: &str, key: &str) -> Message {
        Message::filed(
            exchange.into(),
            key.into(),
            BasicProperties::default(),
            Vec::new(),
        )
    }

    /// The arrival order CI met once: the attempt record before `processing`. The pattern is
    /// still the worker's: `processing` a report confirmed with `pending`, the record after,
    /// `completed` the outcome the ceiling times.
    #[test]
    fn a_record_arriving_before_processing_is_still_a_record() {
        let messages = in_worker_order(vec![
            arrived(EVENTS_EXCHANGE, "payment.bench.pending"),
            arrived(ATTEMPTS_EXCHANGE, "payment.bench"),
            arrived(EVENTS_EXCHANGE, "payment.bench.processing"),
            arrived(EVENTS_EXCHANGE, "payment.bench.completed"),
        ]);
        let filed: Vec<(&str, Step, bool)> = messages
            .iter()
            .map(|m| (m.routing_key.as_str(), m.step, m.terminal))
            .collect();
        assert_eq!(
            filed,
            [
                ("payment.bench.pending", Step::Report, false),
                ("payment.bench.processing", Step::Report, false),
                ("payment.bench", Step::Record, false),
                ("payment.bench.completed", Step::Outcome, true),
            ]
        );
    }
}
