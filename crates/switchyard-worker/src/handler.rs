//! What happens to one delivery: decode, validate, call, report, and only then acknowledge.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use switchyard_amqp::lapin::options::{BasicAckOptions, BasicNackOptions};
use switchyard_amqp::messages::{
    self, ATTEMPT_HEADER, CHECK_HEADER, POLL_SOURCE, REFERENCE_HEADER, RUN_HEADER, SOURCE_HEADER,
    TRACEPARENT_HEADER, WAIT_UNTIL_HEADER,
};
use switchyard_amqp::topology::{
    DEAD_EXCHANGE, KIND_HEADER, RETRY_EXCHANGE, TIER_HEADER, tier_label,
};
use switchyard_amqp::{Delivery, HeaderRead, Headers, Outgoing, PublishError, Publisher};
use switchyard_core::command::sniff_id;
use switchyard_core::waiting::{
    CALLBACK_TYPE_V1, EXPIRY_TYPE_V1, Expiry, WAIT_TYPE_V1, WaitReason, WaitRecord,
};
use switchyard_core::{
    Callback, CallbackOutcome, Command, Completion, ErrorClass, ErrorInfo, Event,
    IdempotencyNamespace, Lifecycle, Name, PayloadValidator, Provider, ProviderCall, ProviderError,
    ProviderOutcome, Recorder, RoutingKey, Status,
};
use switchyard_faults::point;
use switchyard_http::{Redactor, cap, contains_card_number, mask_card_numbers};
use switchyard_journal::{
    Admission, Begin, CheckNo, Claim, Decided, Journal, JournalError, Start, Step,
};
use switchyard_telemetry::catalog::COMMANDS_TOTAL;
use switchyard_telemetry::labels::{OTHER, zero_counter};
use tower::ServiceExt;
use tracing::{Instrument, debug, info_span, warn};
use uuid::Uuid;

use crate::answered::{Answer, Answered};
use crate::plan::Plan;
use crate::retry::RetrySchedule;
use crate::stack::ProviderStack;

/// The classes a dead letter can have (an `unknown` outcome is parked, never dead-lettered).
const DEAD_LETTER_CLASSES: [ErrorClass; 5] = [
    ErrorClass::Permanent,
    ErrorClass::Transient,
    ErrorClass::Timeout,
    ErrorClass::Invalid,
    ErrorClass::Expired,
];

/// A delivery this worker does not run as it is.
#[derive(Debug)]
pub(crate) struct Refused<'a> {
    pub(crate) invalid: switchyard_core::InvalidCommand,
    /// The command, when its body is readable and only this worker's configuration refuses
    /// it (its provider, its operation, its payload's schema), with the provider's slot when
    /// there is one: a step of it that a worker under another configuration began is
    /// carried on rather than refused ([`Handler::refuse`]).
    pub(crate) readable: Option<(Command, Option<&'a Slot>)>,
}

impl Refused<'_> {
    /// Boxed: refusals are rare, and every delivery's `decode` result would carry their size.
    fn unreadable(invalid: switchyard_core::InvalidCommand) -> Box<Self> {
        Box::new(Self {
            invalid,
            readable: None,
        })
    }
}

/// The run a delivery belongs to (0 for a command's first).
pub(crate) fn run_of(headers: &Option<switchyard_amqp::lapin::types::FieldTable>) -> u32 {
    u32::try_from(headers.header_int(RUN_HEADER).unwrap_or(0)).unwrap_or(0)
}

/// A provider ready to be called.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub stack: ProviderStack,
    /// The provider itself, for status checks of work it accepted.
    pub provider: Arc<dyn Provider>,
    pub operations: Vec<Name>,
    pub max_attempts: u32,
    pub meters: SlotMeters,
}

/// The series every command of one provider updates, looked up once: finding a series by its
/// labels (built as strings, hashed, searched) on every delivery was 2% of the worker's CPU.
#[derive(Debug, Clone)]
pub(crate) struct SlotMeters {
    /// `switchyard_attempt_duration_seconds` and `switchyard_attempts_total{outcome="ok"}`
    /// per operation.
    operations: HashMap<Name, (metrics::Histogram, metrics::Counter)>,
    /// `switchyard_commands_total{source="worker"}`, completed and failed.
    completed: metrics::Counter,
    failed: metrics::Counter,
}

impl SlotMeters {
    pub fn new(kind: &Name, provider: &Name, operations: &[Name]) -> Self {
        let commands = |status: &'static str| metrics::counter!(COMMANDS_TOTAL, "kind" => kind.to_string(), "provider" => provider.to_string(), "status" => status, "source" => "worker");
        Self {
            operations: operations
                .iter()
                .map(|operation| {
                    let labels = [
                        ("kind", kind.to_string()),
                        ("provider", provider.to_string()),
                        ("operation", operation.to_string()),
                    ];
                    let duration =
                        metrics::histogram!("switchyard_attempt_duration_seconds", &labels);
                    let ok = metrics::counter!("switchyard_attempts_total", "kind" => kind.to_string(), "provider" => provider.to_string(), "operation" => operation.to_string(), "outcome" => "ok");
                    (operation.clone(), (duration, ok))
                })
                .collect(),
            completed: commands("completed"),
            failed: commands("failed"),
        }
    }
}

/// The series every delivery of a worker updates, looked up once (see [`SlotMeters`]).
#[derive(Debug)]
pub(crate) struct WorkerMeters {
    inflight: metrics::Gauge,
    delivery_duration: metrics::Histogram,
}

impl WorkerMeters {
    pub fn new(kind: &Name) -> Self {
        Self {
            inflight: metrics::gauge!("switchyard_inflight", "kind" => kind.to_string()),
            delivery_duration: metrics::histogram!("switchyard_delivery_duration_seconds", "kind" => kind.to_string()),
        }
    }
}

/// Everything a delivery needs; shared by all of a worker's consumers.
#[derive(Debug)]
pub(crate) struct Handler {
    pub kind: Name,
    pub providers: HashMap<Name, Slot>,
    pub validator: PayloadValidator,
    /// Each operation's default wait for a long-running provider.
    pub max_wait: HashMap<Name, Duration>,
    pub publisher: Publisher,
    pub namespace: IdempotencyNamespace,
    pub schedule: RetrySchedule,
    pub redactor: Redactor,
    /// Decides once what each identity means and what became of each step.
    pub journal: Journal,
    pub meters: WorkerMeters,
}

/// The broker action a delivery ends with, decided once the outcome is durably reported.
pub(crate) enum Disposition {
    Ack,
    /// Reporting (or the journal) failed: leave the delivery for redelivery.
    Requeue(String),
}

impl From<JournalError> for Disposition {
    fn from(e: JournalError) -> Self {
        Disposition::Requeue(e.to_string())
    }
}

impl From<PublishError> for Disposition {
    fn from(e: PublishError) -> Self {
        Disposition::Requeue(e.to_string())
    }
}

/// What a status check carries besides the command: it is a copy of the waiting command,
/// back in its work queue after a delay tier.
#[derive(Debug, Clone)]
pub(crate) struct Check {
    number: u32,
    /// The run it checks for: a replay counts its checks from 1 again.
    run: u32,
    attempt: u32,
    reference: String,
    until: chrono::DateTime<Utc>,
}

impl Check {
    pub(crate) fn read(
        headers: &Option<switchyard_amqp::lapin::types::FieldTable>,
    ) -> Option<Self> {
        let number = u32::try_from(headers.header_int(CHECK_HEADER)?).ok()?;
        Some(Self {
            number,
            run: run_of(headers),
            attempt: u32::try_from(headers.header_int(ATTEMPT_HEADER).unwrap_or(1)).unwrap_or(1),
            reference: headers.header_str(REFERENCE_HEADER)?,
            until: chrono::DateTime::from_timestamp_millis(headers.header_int(WAIT_UNTIL_HEADER)?)?,
        })
    }
}

/// The `traceparent` of what handling a delivery publishes (events, retries, checks): the
/// delivery's own span, a child of the command's; without traces, what came in.
pub(crate) fn outgoing_traceparent(
    headers: &Option<switchyard_amqp::lapin::types::FieldTable>,
) -> Option<String> {
    switchyard_telemetry::traceparent(&tracing::Span::current())
        .or_else(|| headers.header_str(TRACEPARENT_HEADER))
}

/// Attempts made before this delivery, from its `x-switchyard-attempt` header (0 without one);
/// `None` for a value no run can reach. Switchyard writes the header on every retry copy, but
/// the copy arrives on the command queue with everything else, so `decode` refuses a forged or
/// corrupted count instead of counting on from it (`u32::MAX + 1` overflowed).
pub(crate) fn attempts_before(
    headers: &Option<switchyard_amqp::lapin::types::FieldTable>,
) -> Option<u32> {
    match headers.header_int(ATTEMPT_HEADER) {
        None => Some(0),
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|n| *n < switchyard_core::lifecycle::MAX_ATTEMPTS_PER_RUN),
    }
}

impl Handler {
    pub async fn handle(self: Arc<Self>, delivery: Delivery) {
        let started = Instant::now();
        self.meters.inflight.increment(1.0);
        // The command's trace continues here, from the `traceparent` it was published with:
        // a consumer span `process {exchange}` (messaging conventions).
        let span = switchyard_amqp::spans::process_span(&delivery);
        let answered = Answered::default();
        let disposition = patiently(|again| {
            self.process(&delivery, again, &answered)
                .instrument(span.clone())
        })
        .await;
        let acked = match disposition {
            Disposition::Ack => {
                point("before_ack");
                delivery.acker.ack(BasicAckOptions::default()).await
            }
            Disposition::Requeue(e) => {
                warn!(error = %e, "could not report the outcome; leaving the command for redelivery");
                requeue_after_a_pause(&delivery).await
            }
        };
        if let Err(e) = acked {
            // The channel is gone: the broker redelivers the message, and every effect of
            // processing it again is idempotent.
            warn!(error = %e, "could not settle the delivery; it will be redelivered");
        }
        self.meters.inflight.decrement(1.0);
        self.meters
            .delivery_duration
            .record(started.elapsed().as_secs_f64());
    }

    /// Processes `delivery`; `again` when this handler tried it before (and so may have called
    /// the provider), which the journal treats as a redelivery. `answered` keeps the provider's
    /// answer from a try that could not report or decide it, for the tries after it.
    async fn process(&self, delivery: &Delivery, again: bool, answered: &Answered) -> Disposition {
        let redelivered = delivery.redelivered || again;
        let headers = delivery.properties.headers();
        let previous = attempts_before(headers).unwrap_or(0);
        let traceparent = outgoing_traceparent(headers);
        let tp = traceparent.as_deref();

        let check = Check::read(headers);
        let (command, slot) = match self.decode(delivery, check.is_some()) {
            Ok(x) => x,
            Err(refused) => {
                let refusing = self.refuse(
                    delivery,
                    refused,
                    previous,
                    redelivered,
                    check.is_some(),
                    tp,
                );
                return Box::pin(refusing).await;
            }
        };
        // Shared with the provider call rather than copied for it.
        let command = Arc::new(command);
        tracing::Span::current().record("command_id", tracing::field::display(command.id));
        if let Some(check) = check {
            return self
                .check(delivery, &command, slot, check, redelivered, tp)
                .await;
        }
        let run = run_of(headers);
        let attempt_no = previous + 1;
        let lifecycle = Lifecycle::run(&command, run);
        let step = Step {
            command_id: command.id,
            run,
            attempt: attempt_no,
        };
        point("before_begin");
        let begun = match self
            .begin_step(delivery, &command, step, redelivered, tp)
            .await
        {
            Ok(b) => b,
            Err(done) => return done,
        };
        point("after_begin");
        let in_doubt = match begun {
            Begin::Fresh => false,
            Begin::InDoubt => true,
            Begin::Repeated | Begin::Superseded => return self.already_taken(&begun, step),
            Begin::Decided(text) => {
                // Redelivered after its outcome was decided: report that decision again.
                return self
                    .execute_stored(delivery, &command, Some(slot), step, &text, tp)
                    .await;
            }
        };
        if in_doubt && let Some(answer) = answered.of(step) {
            // Not a call its worker died in: this handler's earlier try has the answer. Rare,
            // so on the heap rather than in every delivery's task.
            return Box::pin(self.settle_answer(delivery, &command, slot, answer, tp)).await;
        }
        let now = Utc::now();
        // A step in doubt may have acted at the provider: past the deadline too, it is not
        // `failed` (below, `unknown`).
        let expired = command.is_expired_at(now);
        if expired && !in_doubt {
            let error = ErrorInfo::new(
                ErrorClass::Expired,
                "deadline",
                "the command's deadline passed before it could run",
            );
            let event = lifecycle.reject(previous, error.clone(), now);
            return self
                .settle(
                    delivery,
                    &command,
                    Some(slot),
                    step,
                    &Plan::dead_letter(event, error, previous),
                    tp,
                )
                .await;
        }
        let (attempt, processing) = lifecycle.begin(attempt_no, now);
        if in_doubt && (expired || !slot.provider.idempotent()) {
            // The last owner of this attempt died during the call: the provider may have acted.
            // It takes no idempotency key, so calling it again could act twice; or the deadline
            // has passed, and a call now could be the first to reach it.
            let error = ErrorInfo::new(
                ErrorClass::Unknown,
                "interrupted",
                if expired {
                    "the worker stopped during the provider call, and the command's deadline has \
                     passed since, so it is not called again: whether the provider acted is not known"
                } else {
                    "the worker stopped during the provider call; whether the provider acted is not known"
                },
            );
            let plan = self.unknown_plan(&command, attempt, error, now);
            return self
                .settle(delivery, &command, Some(slot), step, &plan, tp)
                .await;
        }
        let first_sight = attempt_no == 1 && headers.header_str(SOURCE_HEADER).is_none();
        let recorder = Recorder::default();
        // Internal: each HTTP request the provider makes is a client span below it.
        let call_span = info_span!(
            "call provider",
            provider = %command.provider,
            operation = %command.operation,
            attempt = attempt_no,
        );
        let call = ProviderCall {
            command: Arc::clone(&command),
            attempt: attempt_no,
            idempotency_key: self
                .namespace
                .provider_key(&command.identity(), &command.operation),
            // The provider sees the call's own span as its parent.
            traceparent: switchyard_telemetry::traceparent(&call_span).or(traceparent.clone()),
            recorder: recorder.clone(),
        };
        // Report `processing` while the provider works, and send the attempt records as soon
        // as it answered: all reach the broker (and so the ledger) before the outcome is
        // decided, and none waits for another's confirm. With the ledger's queues quorum
        // queues, each confirm is a replicated write; waited for one after the other, they
        // were two of them on every command's path to its outcome.
        // `pending` and `processing` go out in order and are confirmed together.
        let pending = first_sight.then(|| lifecycle.pending(now));
        let report = async {
            let events: Vec<&Event> = pending.iter().chain([&processing]).collect();
            messages::publish_events(&self.publisher, &events, tp).await
        };
        let called = async {
            let call_started = Instant::now();
            let outcome = slot.stack.clone().oneshot(call).instrument(call_span).await;
            let took = call_started.elapsed();
            point("after_provider_answer");
            // A crash after this point replays the records with the same record ids.
            let records = recorder.take();
            let recorded = messages::publish_attempts(&self.publisher, &records).await;
            (outcome, took, records, recorded)
        };
        let (reported, (outcome, took, records, recorded)) = tokio::join!(report, called);
        // `decode` found the operation among the slot's.
        let meters = slot.meters.operations.get(&command.operation);
        if let Some((duration, _)) = meters {
            duration.record(took.as_secs_f64());
        }
        let outcome_label = match &outcome {
            Ok(_) => "ok",
            Err(e) => e.class.as_str(),
        };
        match (meters, &outcome) {
            (Some((_, ok)), Ok(_)) => ok.increment(1),
            _ => metrics::counter!("switchyard_attempts_total", "kind" => self.kind.to_string(), "provider" => command.provider.to_string(), "operation" => command.operation.to_string(), "outcome" => outcome_label).increment(1),
        }
        // In the delivery's span: the line carries the command and trace ids.
        debug!(
            attempt = attempt_no,
            outcome = outcome_label,
            "provider answered"
        );
        let now = Utc::now();
        let plan = match outcome {
            Ok(ProviderOutcome::Completed { result, reference }) => Plan::Report {
                event: attempt.complete(self.redactor.redacted(result), reference, now),
            },
            Ok(ProviderOutcome::Waiting { reference }) => {
                let expires_at = command.deadline.unwrap_or_else(|| {
                    now + chrono::Duration::from_std(self.max_wait(&command)).unwrap_or_default()
                });
                let (_waiting, event) = attempt.wait(reference.clone(), now);
                Plan::Park {
                    event,
                    reference,
                    reason: WaitReason::Waiting,
                    since: now,
                    expires_at,
                }
            }
            Err(e) if e.class == ErrorClass::Unknown => {
                let error = self.error_info(&e);
                self.unknown_plan(&command, attempt, error, now)
            }
            // No readable answer from a provider that takes no idempotency key, after the
            // request may have left (a timeout, a connection broken mid-call): it may have
            // acted, and a retry could act twice. Unknown, like a call its worker died in.
            Err(e) if e.left_in_doubt() && !slot.provider.idempotent() => {
                let error = ErrorInfo::new(
                    ErrorClass::Unknown,
                    e.code.clone(),
                    format!(
                        "{}; the provider takes no idempotency key and may have acted, so it is \
                         not called again",
                        self.error_info(&e).message
                    ),
                );
                self.unknown_plan(&command, attempt, error, now)
            }
            Err(e) if e.class.is_retryable() && attempt_no < slot.max_attempts => {
                let delay = self.schedule.delay(attempt_no, e.retry_after);
                let tier = self.schedule.tier_for(delay);
                let next = now + chrono::Duration::from_std(tier).unwrap_or_default();
                if command.deadline.is_some_and(|d| next > d) {
                    let error = expired_during_retry(&self.error_info(&e));
                    let event = attempt.fail(error.clone(), now);
                    Plan::dead_letter(event, error, attempt_no)
                } else {
                    Plan::Retry {
                        event: attempt.retry(self.error_info(&e), next, now),
                        tier_ms: u64::try_from(tier.as_millis()).unwrap_or(u64::MAX),
                    }
                }
            }
            Err(e) => {
                let mut error = self.error_info(&e);
                if e.class.is_retryable() {
                    error.message =
                        format!("gave up after {attempt_no} attempts: {}", error.message);
                }
                let event = attempt.fail(error.clone(), now);
                Plan::dead_letter(event, error, attempt_no)
            }
        };
        let done = match reported.and(recorded) {
            Ok(()) => {
                self.settle(delivery, &command, Some(slot), step, &plan, tp)
                    .await
            }
            Err(e) => Disposition::from(e),
        };
        if matches!(done, Disposition::Requeue(_)) {
            answered.keep(Answer {
                step,
                events: pending.into_iter().chain([processing]).collect(),
                records,
                plan,
            });
        }
        done
    }

    /// Reports and decides the answer an earlier try of this delivery got from the provider
    /// and could not report or decide: its `processing` and records again (same ids), then its
    /// plan.
    async fn settle_answer(
        &self,
        delivery: &Delivery,
        command: &Command,
        slot: &Slot,
        answer: Answer,
        tp: Option<&str>,
    ) -> Disposition {
        let events: Vec<&Event> = answer.events.iter().collect();
        let reported = messages::publish_events(&self.publisher, &events, tp).await;
        let recorded = messages::publish_attempts(&self.publisher, &answer.records).await;
        if let Err(e) = reported.and(recorded) {
            return Disposition::from(e);
        }
        self.settle(delivery, command, Some(slot), answer.step, &answer.plan, tp)
            .await
    }

    /// Begins `step` in the journal. Identity (contract 7): the first attempt of a run also
    /// asks what the identity means, in the same round trip, and a duplicate or a conflict is
    /// answered here; `Err` is then the delivery's disposition.
    pub(crate) async fn begin_step(
        &self,
        delivery: &Delivery,
        command: &Command,
        step: Step,
        redelivered: bool,
        tp: Option<&str>,
    ) -> Result<Begin, Disposition> {
        if step.attempt != 1 {
            return self
                .journal
                .begin(step, redelivered)
                .await
                .map_err(Disposition::from);
        }
        let Start { admission, begin } = self.journal.start(command, step, redelivered).await?;
        match self
            .answer_identity(delivery, command, admission.as_ref(), tp)
            .await
        {
            Some(done) => Err(done),
            None => Ok(begin.unwrap_or(Begin::Superseded)),
        }
    }

    /// A step another copy of the delivery runs, or ran, or one a later step superseded: this
    /// copy changes nothing.
    fn already_taken(&self, begun: &Begin, step: Step) -> Disposition {
        let why = if *begun == Begin::Repeated {
            "repeated"
        } else {
            "superseded"
        };
        self.count_duplicate(why);
        debug!(
            run = step.run,
            attempt = step.attempt,
            why,
            "step already taken; acknowledging"
        );
        Disposition::Ack
    }

    /// The answer to a command whose identity another command holds (a duplicate, or a
    /// conflict); `None` when it is its own.
    async fn answer_identity(
        &self,
        delivery: &Delivery,
        command: &Command,
        admission: Option<&Admission>,
        tp: Option<&str>,
    ) -> Option<Disposition> {
        match admission? {
            Admission::Duplicate { original, .. } => {
                Some(self.duplicate(command, *original, tp).await)
            }
            Admission::Conflict { original } => {
                Some(self.conflict(delivery, command, *original, tp).await)
            }
            Admission::New | Admission::Same { .. } => None,
        }
    }

    /// The default wait of the command's operation for a long-running provider.
    fn max_wait(&self, command: &Command) -> Duration {
        self.max_wait
            .get(&command.operation)
            .copied()
            .unwrap_or(switchyard_core::kind::DEFAULT_MAX_WAIT)
    }

    /// An outcome nobody can read: parked for the resolver with the provider key as its
    /// reference, so a status check (where the provider offers one) or an operator ends it.
    pub(crate) fn unknown_plan(
        &self,
        command: &Command,
        attempt: switchyard_core::Attempt<'_>,
        error: ErrorInfo,
        now: chrono::DateTime<Utc>,
    ) -> Plan {
        let reference = self
            .namespace
            .provider_key(&command.identity(), &command.operation)
            .to_string();
        let (_later, event) = attempt.unknown(error, now);
        Plan::Park {
            event,
            reference,
            reason: WaitReason::Unknown,
            since: now,
            expires_at: now,
        }
    }

    /// Carries out the plan stored for `step` in the journal: a redelivery re-sending its
    /// decision, or a delivery that lost the decision carrying out the winner's.
    async fn execute_stored(
        &self,
        delivery: &Delivery,
        command: &Command,
        slot: Option<&Slot>,
        step: Step,
        text: &str,
        tp: Option<&str>,
    ) -> Disposition {
        match Plan::decode(text) {
            Some(plan) => self.execute(delivery, command, slot, &plan, tp).await,
            None => unreadable_decision(step),
        }
    }

    /// Decides `step`'s outcome once, then carries it out: this delivery's plan when it won,
    /// the winner's when it lost. Two deliveries of one step race only after the first's
    /// connection died during its call, and then the loser may hold the message's only copy:
    /// the winner's can no longer be acknowledged, nor redelivered to re-send its plan if the
    /// winner dies. Carrying a plan out twice publishes the same events and copies again,
    /// which their ids and `begin` absorb.
    pub(crate) async fn settle(
        &self,
        delivery: &Delivery,
        command: &Command,
        slot: Option<&Slot>,
        step: Step,
        plan: &Plan,
        tp: Option<&str>,
    ) -> Disposition {
        match self.journal.decide(step, plan.encode()).await {
            Ok(Decided::Won) => {
                point("after_decide");
                self.execute(delivery, command, slot, plan, tp).await
            }
            Ok(Decided::Lost(winner)) => {
                self.count_duplicate("decided_elsewhere");
                match winner {
                    Some(text) => {
                        self.execute_stored(delivery, command, slot, step, &text, tp)
                            .await
                    }
                    // Pruned: long settled.
                    None => Disposition::Ack,
                }
            }
            Err(e) => e.into(),
        }
    }

    /// Carries out a decided plan: every publish is idempotent (deterministic event ids,
    /// step-keyed copies), so doing it again after a crash changes nothing.
    pub(crate) async fn execute(
        &self,
        delivery: &Delivery,
        command: &Command,
        slot: Option<&Slot>,
        plan: &Plan,
        tp: Option<&str>,
    ) -> Disposition {
        let prepared = match plan {
            Plan::Report { .. } => Ok(()),
            Plan::Retry { event, tier_ms } => {
                let tier = Duration::from_millis(*tier_ms);
                let r = self.schedule_retry(delivery, event.attempt, tier).await;
                if r.is_ok() {
                    point("after_retry_publish");
                    metrics::counter!("switchyard_retries_scheduled_total", "kind" => self.kind.to_string(), "provider" => command.provider.to_string()).increment(1);
                }
                r
            }
            Plan::DeadLetter {
                error, attempts, ..
            } => {
                let r = self
                    .publish_dead_letter(delivery, &command.provider, error, *attempts)
                    .await;
                if r.is_ok() {
                    point("after_dead_letter_publish");
                }
                r
            }
            Plan::Park {
                event,
                reference,
                reason,
                since,
                expires_at,
            } => {
                let r = self
                    .park(
                        delivery,
                        command,
                        slot,
                        event,
                        reference,
                        *reason,
                        *since,
                        *expires_at,
                    )
                    .await;
                if r.is_ok() {
                    point("after_wait_publish");
                }
                r
            }
        };
        if let Err(e) = prepared {
            return Disposition::from(e);
        }
        let disposition = self.finish(plan.event(), tp).await;
        if plan.event().status == Status::Unknown && matches!(disposition, Disposition::Ack) {
            metrics::counter!("switchyard_unknown_outcomes_total", "kind" => self.kind.to_string(), "provider" => command.provider.to_string()).increment(1);
        }
        if plan.event().status.is_terminal() && matches!(disposition, Disposition::Ack) {
            point("after_terminal_event");
        }
        disposition
    }

    /// A repeat of an earlier command's identity and fingerprint under another id: not
    /// executed; one `duplicate` event under its own id names the original.
    async fn duplicate(&self, command: &Command, original: Uuid, tp: Option<&str>) -> Disposition {
        metrics::counter!("switchyard_duplicate_commands_total", "kind" => self.kind.to_string(), "provider" => command.provider.to_string()).increment(1);
        if original == command.id {
            return Disposition::Ack;
        }
        let event = Lifecycle::of(command).duplicate(original, Utc::now());
        self.finish(&event, tp).await
    }

    /// The same identity (or id) asking for something else: never reaches a provider.
    /// Dead-lettered `invalid` / `idempotency_conflict`, with a `failed` event under its own
    /// id only when that id is not the original's (whose lifecycle it must not touch).
    async fn conflict(
        &self,
        delivery: &Delivery,
        command: &Command,
        original: Uuid,
        tp: Option<&str>,
    ) -> Disposition {
        metrics::counter!("switchyard_idempotency_conflicts_total", "kind" => self.kind.to_string(), "provider" => command.provider.to_string()).increment(1);
        let error = ErrorInfo::new(
            ErrorClass::Invalid,
            "idempotency_conflict",
            format!(
                "command {original} already holds this {} with another kind, provider, operation or payload",
                if command.idempotency_key.is_some() {
                    "idempotency key"
                } else {
                    "id"
                }
            ),
        );
        warn!(%original, "idempotency conflict, dead-lettering");
        if let Err(e) = self
            .publish_dead_letter(delivery, &command.provider, &error, 0)
            .await
        {
            return Disposition::from(e);
        }
        if original == command.id {
            return Disposition::Ack;
        }
        let event = Lifecycle::of(command).reject(0, error, Utc::now());
        self.finish(&event, tp).await
    }

    /// The `provider` label of `provider`: its name when this worker serves it, else
    /// `other` (a name read from the routing key of a command nobody serves is not a label).
    fn provider_label(&self, provider: &Name) -> String {
        if self.providers.contains_key(provider) {
            provider.to_string()
        } else {
            OTHER.to_owned()
        }
    }

    /// Creates at zero every series of this worker's alerts and dashboards, so `rate()` and
    /// `increase()` see them before the first event.
    pub fn zero_metrics(&self) {
        let kind = || ("kind", self.kind.to_string());
        for (name, slot) in &self.providers {
            let provider = || ("provider", name.to_string());
            for status in ["completed", "failed"] {
                zero_counter(
                    COMMANDS_TOTAL,
                    &[
                        kind(),
                        provider(),
                        ("status", status.into()),
                        ("source", "worker".into()),
                    ],
                );
            }
            for operation in &slot.operations {
                zero_counter(
                    "switchyard_attempts_total",
                    &[
                        kind(),
                        provider(),
                        ("operation", operation.to_string()),
                        ("outcome", "ok".into()),
                    ],
                );
            }
            for class in DEAD_LETTER_CLASSES {
                zero_counter(
                    "switchyard_dead_letters_total",
                    &[kind(), provider(), ("class", class.as_str().into())],
                );
            }
            for counter in [
                "switchyard_retries_scheduled_total",
                "switchyard_unknown_outcomes_total",
                "switchyard_duplicate_commands_total",
                "switchyard_idempotency_conflicts_total",
            ] {
                zero_counter(counter, &[kind(), provider()]);
            }
            if slot.provider.completion() == Completion::Poll {
                for outcome in ["pending", "succeeded", "failed"] {
                    zero_counter(
                        "switchyard_status_checks_total",
                        &[kind(), provider(), ("outcome", outcome.into())],
                    );
                }
            }
        }
        for reason in [
            "repeated",
            "superseded",
            "decided_elsewhere",
            "check_taken",
            "check_behind",
        ] {
            zero_counter(
                "switchyard_duplicate_deliveries_total",
                &[kind(), ("reason", reason.into())],
            );
        }
        zero_counter("switchyard_quick_retries_total", &[]);
        self.meters.inflight.increment(0.0);
    }

    /// The event view of a provider error, redacted.
    fn error_info(&self, e: &ProviderError) -> ErrorInfo {
        let mut info = e.info();
        info.message = self.redactor.text(&info.message);
        info
    }

    /// Reads a delivery's command and checks it against this worker's configuration: its
    /// provider, the operation, the payload's schema (and, whatever the configuration, card
    /// numbers). A status check (`check`) needs only its provider: it asks about work the
    /// provider took under whatever configuration was in force then.
    pub(crate) fn decode(
        &self,
        delivery: &Delivery,
        check: bool,
    ) -> Result<(Command, &Slot), Box<Refused<'_>>> {
        let mut command = Command::decode(&delivery.data, delivery.routing_key.as_str())
            .map_err(Refused::unreadable)?;
        let headers = delivery.properties.headers();
        if attempts_before(headers).is_none() {
            return Err(Refused::unreadable(switchyard_core::InvalidCommand::field(
                Some(command.id),
                ATTEMPT_HEADER,
                format!(
                    "{ATTEMPT_HEADER} must be a count of attempts below {}; it is Switchyard's own header, not to be set by publishers",
                    switchyard_core::lifecycle::MAX_ATTEMPTS_PER_RUN
                ),
            )));
        }
        let judged = self.judge(&mut command, check);
        // Metadata only ever goes into events: its secrets never enter one (the delivery's
        // bytes, kept for retries and dead letters, stay as sent). After the checks, which
        // must see card numbers as they were sent.
        if let Some(clean) = messages::redacted_metadata(&command.metadata, &self.redactor) {
            command.metadata = clean;
        }
        match judged {
            Ok(slot) => Ok((command, slot)),
            Err((invalid, slot)) => Err(Box::new(Refused {
                invalid,
                readable: Some((command, slot)),
            })),
        }
    }

    /// The checks of [`Handler::decode`] that ask this worker's configuration (and the card
    /// numbers): the provider's slot, or why not, with the slot when there is one.
    fn judge(
        &self,
        command: &mut Command,
        check: bool,
    ) -> Result<&Slot, (switchyard_core::InvalidCommand, Option<&Slot>)> {
        let Some(slot) = self.providers.get(&command.provider) else {
            let invalid = switchyard_core::InvalidCommand::field(
                Some(command.id),
                "provider",
                format!(
                    "no provider {:?} of kind {:?} is configured",
                    command.provider.as_str(),
                    self.kind.as_str()
                ),
            );
            return Err((invalid, None));
        };
        if !check && !slot.operations.contains(&command.operation) {
            let invalid = switchyard_core::InvalidCommand::field(
                Some(command.id),
                "operation",
                format!(
                    "provider {:?} has no operation {:?}",
                    command.provider.as_str(),
                    command.operation.as_str()
                ),
            );
            return Err((invalid, Some(slot)));
        }
        // The payload is checked as a JSON value, lent for the checks rather than copied.
        let payload = serde_json::Value::Object(std::mem::take(&mut command.payload));
        let checked = self.check_payload(command, &payload, !check);
        if let serde_json::Value::Object(map) = payload {
            command.payload = map;
        }
        checked
            .map(|()| slot)
            .map_err(|invalid| (invalid, Some(slot)))
    }

    /// A command this worker's configuration refuses: rejected `invalid`, unless a worker
    /// that took it under another configuration (the fleet was changing its configuration
    /// while the command was under way) began this step. Then the step goes on from where
    /// that worker left it: its decision is carried out, a call it died in is `unknown`, a
    /// second copy changes nothing; a duplicate or a conflict of another command's identity is
    /// answered as one. A status check naming a provider this worker lacks is
    /// dead-lettered without an event, the wait left to the resolver: work queues are per
    /// provider, so none should arrive, but a refusal must never end a wait `failed`.
    pub(crate) async fn refuse(
        &self,
        delivery: &Delivery,
        refused: Box<Refused<'_>>,
        previous: u32,
        redelivered: bool,
        check: bool,
        tp: Option<&str>,
    ) -> Disposition {
        let Refused { invalid, readable } = *refused;
        let Some((command, slot)) = readable else {
            return self.reject_invalid(delivery, invalid, previous, tp).await;
        };
        if check {
            let error = self.invalid_info(&invalid);
            warn!(
                command_id = %command.id,
                error = %error.message,
                "cannot check a waiting command's status: its provider is not configured here; dead-lettering the check, the command waits for a callback, its deadline or an operator"
            );
            return match self
                .publish_dead_letter(delivery, &command.provider, &error, previous)
                .await
            {
                Ok(()) => Disposition::Ack,
                Err(e) => e.into(),
            };
        }
        let run = run_of(delivery.properties.headers());
        let step = Step {
            command_id: command.id,
            run,
            attempt: previous + 1,
        };
        // At a run's first attempt, what its identity means too, as `begin_step` asks it.
        let asked = (step.attempt == 1).then_some(&command);
        let (admission, begun) = match self.journal.peek(asked, step, redelivered).await {
            Ok(Start { admission, begin }) => (admission, begin),
            Err(e) => return e.into(),
        };
        if let Some(done) = self
            .answer_identity(delivery, &command, admission.as_ref(), tp)
            .await
        {
            return done;
        }
        match begun {
            None | Some(Begin::Fresh) => self.reject_invalid(delivery, invalid, previous, tp).await,
            Some(taken @ (Begin::Repeated | Begin::Superseded)) => self.already_taken(&taken, step),
            Some(Begin::Decided(text)) => {
                self.execute_stored(delivery, &command, slot, step, &text, tp)
                    .await
            }
            Some(Begin::InDoubt) => {
                let now = Utc::now();
                let (attempt, _processing) = Lifecycle::run(&command, run).begin(step.attempt, now);
                let error = ErrorInfo::new(
                    ErrorClass::Unknown,
                    "interrupted",
                    format!(
                        "the worker stopped during the provider call, and the configuration no \
                         longer runs the command ({}), so it is not called again: whether the \
                         provider acted is not known",
                        self.invalid_info(&invalid).message
                    ),
                );
                let plan = self.unknown_plan(&command, attempt, error, now);
                self.settle(delivery, &command, slot, step, &plan, tp).await
            }
        }
    }

    /// A command's payload against its operation's schema (unless `schema` is false), then
    /// the command against card numbers: Switchyard stays out of card-data scope, payment details travel as provider
    /// tokens.
    fn check_payload(
        &self,
        command: &Command,
        payload: &serde_json::Value,
        schema: bool,
    ) -> Result<(), switchyard_core::InvalidCommand> {
        if schema {
            self.validator
                .validate(
                    &command.kind,
                    &command.provider,
                    &command.operation,
                    payload,
                )
                .map_err(|mut e| {
                    e.id = Some(command.id);
                    e
                })?;
        }
        if let Some(field) = switchyard_http::command_part_with_card_number(
            payload,
            &command.metadata,
            command.idempotency_key.as_ref(),
        ) {
            return Err(switchyard_core::InvalidCommand::field(
                Some(command.id),
                field,
                "holds a card number: send the provider's payment-method token instead",
            ));
        }
        Ok(())
    }

    pub(crate) async fn finish(&self, event: &Event, tp: Option<&str>) -> Disposition {
        match messages::publish_event(&self.publisher, event, tp).await {
            Ok(()) => {
                // Duplicates end nothing: switchyard_duplicate_commands_total counts them.
                match (event.status, self.providers.get(&event.provider)) {
                    (Status::Completed, Some(slot)) => slot.meters.completed.increment(1),
                    (Status::Failed, Some(slot)) => slot.meters.failed.increment(1),
                    (Status::Completed | Status::Failed, None) => {
                        metrics::counter!(COMMANDS_TOTAL, "kind" => self.kind.to_string(), "provider" => OTHER, "status" => event.status.as_str(), "source" => "worker").increment(1);
                    }
                    _ => {}
                }
                Disposition::Ack
            }
            Err(e) => Disposition::from(e),
        }
    }

    /// Why a command is invalid, as its `failed` event and dead letter say it.
    fn invalid_info(&self, invalid: &switchyard_core::InvalidCommand) -> ErrorInfo {
        let message = match &invalid.field {
            Some(f) => format!("{f}: {}", invalid.message),
            None => invalid.message.clone(),
        };
        ErrorInfo::new(
            ErrorClass::Invalid,
            "invalid_command",
            cap(&self.redactor.text(&message), 500),
        )
    }

    /// An undecodable or invalid command: dead-lettered once, with a `failed` event when its
    /// id is readable. Never retried, never requeued.
    pub(crate) async fn reject_invalid(
        &self,
        delivery: &Delivery,
        invalid: switchyard_core::InvalidCommand,
        previous: u32,
        tp: Option<&str>,
    ) -> Disposition {
        let error = self.invalid_info(&invalid);
        warn!(error = %error.message, "invalid command, dead-lettering");
        let id = invalid.id.or_else(|| sniff_id(&delivery.data));
        let rk: Option<RoutingKey> = delivery.routing_key.as_str().parse().ok();
        let provider = rk.as_ref().map(|r| r.provider.clone());
        let event = id.zip(rk).map(|(id, rk)| {
            // A shell of the command, enough to address the event: the real body is unusable.
            let shell = Command::shell(id, rk, Utc::now());
            Lifecycle::of(&shell).reject(previous, error.clone(), Utc::now())
        });
        let provider = provider.unwrap_or_else(|| self.kind.clone());
        match event {
            Some(e) => {
                self.dead_letter(delivery, &provider, &error, previous, &e, tp)
                    .await
            }
            None => match self
                .publish_dead_letter(delivery, &provider, &error, previous)
                .await
            {
                Ok(()) => Disposition::Ack,
                Err(e) => Disposition::from(e),
            },
        }
    }

    async fn publish_dead_letter(
        &self,
        delivery: &Delivery,
        provider: &Name,
        error: &ErrorInfo,
        attempts: u32,
    ) -> Result<(), PublishError> {
        let headers = messages::dead_letter_headers(
            Headers::from_table(delivery.properties.headers().as_ref()),
            error,
            attempts,
        );
        // Keep the routing key when it is usable, so the kind's DLQ binding catches it.
        let rk = if delivery
            .routing_key
            .as_str()
            .starts_with(&format!("{}.", self.kind))
        {
            delivery.routing_key.to_string()
        } else {
            format!("{}.{provider}.invalid", self.kind)
        };
        // A command carrying card data is never replayable as it is: keep it masked.
        let lossy = String::from_utf8_lossy(&delivery.data);
        let masked = contains_card_number(&lossy).then(|| mask_card_numbers(&lossy).into_bytes());
        self.publisher
            .publish(Outgoing {
                exchange: DEAD_EXCHANGE,
                routing_key: &rk,
                body: masked.as_deref().unwrap_or(&delivery.data),
                properties: delivery.properties.clone().with_headers(headers.build()),
                mandatory: true,
            })
            .await?;
        metrics::counter!("switchyard_dead_letters_total", "kind" => self.kind.to_string(), "provider" => self.provider_label(provider), "class" => error.class.as_str()).increment(1);
        Ok(())
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        provider: &Name,
        error: &ErrorInfo,
        attempts: u32,
        event: &Event,
        tp: Option<&str>,
    ) -> Disposition {
        if let Err(e) = self
            .publish_dead_letter(delivery, provider, error, attempts)
            .await
        {
            return Disposition::from(e);
        }
        self.finish(event, tp).await
    }

    /// Hands a parked command to the resolver: its wait record now; for `waiting`, its expiry
    /// at the deadline (or the operation's default wait) through the delay tiers; and, for a
    /// provider that must be asked, the first status check. An `unknown` outcome never
    /// expires: a status check or an operator ends it.
    #[allow(clippy::too_many_arguments)]
    async fn park(
        &self,
        delivery: &Delivery,
        command: &Command,
        slot: Option<&Slot>,
        event: &Event,
        reference: &str,
        reason: WaitReason,
        since: chrono::DateTime<Utc>,
        expires_at: chrono::DateTime<Utc>,
    ) -> Result<(), PublishError> {
        let attempt = event.attempt;
        let record = WaitRecord {
            command: command.clone(),
            attempt,
            run: event.run,
            reason,
            reference: reference.to_owned(),
            since,
            expires_at,
        };
        let id = format!("{}.{}.{attempt}", command.id, event.run);
        messages::publish_callback_message(
            &self.publisher,
            WAIT_TYPE_V1,
            &format!("wait.{id}"),
            &record.to_bytes(),
            None,
            Headers::default(),
        )
        .await?;
        let until = match reason {
            WaitReason::Waiting => {
                let expiry = Expiry {
                    command_id: command.id,
                    due: expires_at,
                };
                let remaining = (expires_at - since).to_std().unwrap_or_default();
                messages::publish_callback_message(
                    &self.publisher,
                    EXPIRY_TYPE_V1,
                    &format!("expiry.{id}"),
                    &expiry.to_bytes(),
                    messages::tier_within(self.schedule.tiers(), remaining),
                    Headers::default(),
                )
                .await?;
                expires_at
            }
            // Checked for as long as an identity is remembered.
            WaitReason::Unknown => since + chrono::Duration::days(1),
        };
        let polled = slot.map(|s| s.provider.completion() == Completion::Poll);
        if polled.is_none() {
            warn!(
                command_id = %command.id,
                provider = %command.provider,
                "parked a command whose provider is not configured here: no status checks; a callback, its deadline or an operator ends it"
            );
        }
        if polled == Some(true) {
            let first = Check {
                number: 1,
                run: event.run,
                attempt,
                reference: reference.to_owned(),
                until,
            };
            self.schedule_check(delivery, &first, since, None).await?;
        }
        Ok(())
    }

    /// Counts a delivery acknowledged without effect: its work was, or is being, done by
    /// another copy (`why`: one of the reasons zeroed at start).
    pub(crate) fn count_duplicate(&self, why: &'static str) {
        metrics::counter!("switchyard_duplicate_deliveries_total", "kind" => self.kind.to_string(), "reason" => why).increment(1);
    }

    /// One status check of work a polled provider accepted. A terminal answer goes to the
    /// resolver like a callback (so it takes effect once, whatever else arrives); anything else
    /// schedules the next check, until the wait's end, where the expiry decides. Each check is
    /// claimed in the journal first, so a copy of a check already made (a second chain, begun
    /// by a check redelivered after its worker scheduled the next one and died) ends there.
    async fn check(
        &self,
        delivery: &Delivery,
        command: &Arc<Command>,
        slot: &Slot,
        check: Check,
        redelivered: bool,
        tp: Option<&str>,
    ) -> Disposition {
        if Utc::now() >= check.until {
            return Disposition::Ack;
        }
        let claim = CheckNo {
            step: Step {
                command_id: command.id,
                run: check.run,
                attempt: check.attempt,
            },
            number: check.number,
        };
        match self.journal.claim_check(claim, redelivered).await {
            Ok(Claim::Mine) => {}
            Ok(other) => {
                let why = if other == Claim::Taken {
                    "check_taken"
                } else {
                    "check_behind"
                };
                self.count_duplicate(why);
                debug!(
                    check = check.number,
                    why, "status check made by another copy; acknowledging"
                );
                return Disposition::Ack;
            }
            Err(e) => return e.into(),
        }
        let recorder = Recorder::default();
        let call = ProviderCall {
            command: Arc::clone(command),
            attempt: check.attempt,
            idempotency_key: self
                .namespace
                .provider_key(&command.identity(), &command.operation),
            traceparent: tp.map(str::to_owned),
            recorder: recorder.clone(),
        };
        let answer = slot.provider.check(&call, &check.reference).await;
        let label = match &answer {
            Ok(CallbackOutcome::Pending) => "pending",
            Ok(CallbackOutcome::Succeeded { .. }) => "succeeded",
            Ok(CallbackOutcome::Failed { .. }) => "failed",
            Err(e) => e.class.as_str(),
        };
        metrics::counter!("switchyard_status_checks_total", "kind" => self.kind.to_string(), "provider" => command.provider.to_string(), "outcome" => label).increment(1);
        if let Err(e) = messages::publish_attempts(&self.publisher, &recorder.take()).await {
            return Disposition::from(e);
        }
        let now = Utc::now();
        // Ok(outcome): the end, for the resolver; Err(retry_after): check again.
        let outcome = match answer {
            Ok(CallbackOutcome::Pending) => Err(None),
            Ok(terminal) => Ok(terminal),
            // "No such operation" (404, 410) is the provider's answer: it never acted, or
            // dropped the work. For an unknown outcome looked up by its key, it is how a call
            // that never reached the provider ends.
            Err(e) if matches!(e.http_status, Some(404 | 410)) => Ok(CallbackOutcome::Failed {
                error: self.error_info(&e),
            }),
            // Any other failure of the check, even for good (credentials refused, an answer
            // that is not a report), says nothing of the operation, which the provider may
            // finish: only its report, the wait's end or an operator ends the command.
            Err(e) => {
                warn!(error = %e, class = e.class.as_str(), "status check failed; checking again later");
                Err(e.retry_after)
            }
        };
        let sent = match outcome {
            Ok(outcome) => {
                let callback = Callback {
                    provider: command.provider.clone(),
                    // One id per check of one run: the resolver has one effect per id, so
                    // an id shared with an earlier run's check would be taken for it.
                    webhook_id: format!(
                        "check.{}.{}.{}.{}",
                        command.id, check.run, check.attempt, check.number
                    ),
                    reference: check.reference,
                    outcome,
                    received_at: now,
                };
                messages::publish_callback_message(
                    &self.publisher,
                    CALLBACK_TYPE_V1,
                    &format!("callback.{}.{}", callback.provider, callback.webhook_id),
                    &callback.to_bytes(),
                    None,
                    // The resolver counts it as a poll's answer, not a webhook.
                    Headers::default().str(SOURCE_HEADER, POLL_SOURCE),
                )
                .await
            }
            Err(retry_after) => {
                let next = Check {
                    number: check.number.saturating_add(1),
                    ..check
                };
                let scheduled = self.schedule_check(delivery, &next, now, retry_after).await;
                if scheduled.is_ok() {
                    point("after_check_scheduled");
                }
                scheduled
            }
        };
        match sent {
            Ok(()) => Disposition::Ack,
            Err(e) => Disposition::from(e),
        }
    }

    /// Parks a status check in a delay tier, backing off with the check's number (or later,
    /// when the provider asked with `Retry-After`); none is scheduled past the wait's end.
    async fn schedule_check(
        &self,
        delivery: &Delivery,
        check: &Check,
        now: chrono::DateTime<Utc>,
        retry_after: Option<Duration>,
    ) -> Result<(), PublishError> {
        let tier = self
            .schedule
            .tier_for(self.schedule.delay(check.number, retry_after));
        if now + chrono::Duration::from_std(tier).unwrap_or_default() >= check.until {
            return Ok(());
        }
        let headers = Headers::from_table(delivery.properties.headers().as_ref())
            .int(RUN_HEADER, i64::from(check.run))
            .int(ATTEMPT_HEADER, i64::from(check.attempt))
            .int(CHECK_HEADER, i64::from(check.number))
            .str(REFERENCE_HEADER, &check.reference)
            .int(WAIT_UNTIL_HEADER, check.until.timestamp_millis());
        self.delay(delivery, headers, tier).await
    }

    /// Parks a copy in the delay tier; the tier's TTL dead-letters it back to the work queue.
    async fn schedule_retry(
        &self,
        delivery: &Delivery,
        attempts: u32,
        tier: Duration,
    ) -> Result<(), PublishError> {
        let headers = Headers::from_table(delivery.properties.headers().as_ref())
            .int(ATTEMPT_HEADER, i64::from(attempts));
        self.delay(delivery, headers, tier).await
    }

    /// Publishes a copy of the delivery with `headers` into the kind's delay tier.
    async fn delay(
        &self,
        delivery: &Delivery,
        headers: Headers,
        tier: Duration,
    ) -> Result<(), PublishError> {
        let headers = headers
            .without_broker_annotations()
            .str(KIND_HEADER, self.kind.as_str())
            .str(TIER_HEADER, &tier_label(tier));
        self.publisher
            .publish(Outgoing {
                exchange: RETRY_EXCHANGE,
                routing_key: delivery.routing_key.as_str(),
                body: &delivery.data,
                properties: delivery.properties.clone().with_headers(headers.build()),
                mandatory: true,
            })
            .await
    }
}

/// A stored decision this version cannot read, written by a newer one during a rolling
/// upgrade. Acknowledged, the command (decided, perhaps never carried out) got no outcome at
/// all; returned, it reaches a worker that reads it, and the delivery limit bounds the returns
/// (the broker's dead letter then keeps it for a replay).
pub(crate) fn unreadable_decision(step: Step) -> Disposition {
    warn!(
        ?step,
        "a stored decision this version cannot read (written by a newer one?); leaving the delivery for a worker that can"
    );
    Disposition::Requeue("the stored decision is unreadable by this version".into())
}

/// How long a delivery whose outcome could not be reported is tried again in place before it
/// goes back to its queue (which counts against the queue's delivery limit).
const REPORT_PATIENCE: Duration = Duration::from_secs(45);

/// Runs `process` (`again`: it ran before, so it must be treated as a redelivery) until its
/// outcome is reported. Reporting failed (the broker not confirming while a queue elects a
/// leader, the journal away): it is tried again in place, as a redelivery would be, for a
/// while. Every return to the queue counts against its delivery limit, and a few quick ones
/// during an election dead-lettered commands whose provider had acted, with no outcome
/// reported.
pub(crate) async fn patiently<Fut>(mut process: impl FnMut(bool) -> Fut) -> Disposition
where
    Fut: Future<Output = Disposition>,
{
    let mut disposition = process(false).await;
    // The runtime's clock, so a test can run it paused.
    let patience = tokio::time::Instant::now() + REPORT_PATIENCE;
    let mut pause = Duration::from_secs(1);
    while let Disposition::Requeue(e) = &disposition {
        if tokio::time::Instant::now() + pause > patience {
            break;
        }
        warn!(error = %e, ?pause, "could not report the outcome; trying again in place");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(15));
        disposition = process(true).await;
    }
    disposition
}

/// Returns a delivery to its queue after a short pause, so a broker that refuses publishes (or a
/// journal that is down) is not hammered.
pub(crate) async fn requeue_after_a_pause(
    delivery: &Delivery,
) -> Result<bool, switchyard_amqp::lapin::Error> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    delivery
        .acker
        .nack(BasicNackOptions {
            multiple: false,
            requeue: true,
        })
        .await
}

fn expired_during_retry(info: &ErrorInfo) -> ErrorInfo {
    let mut info = info.clone();
    info.class = ErrorClass::Expired;
    info.message = format!(
        "the deadline passes before the next attempt; last error: {}",
        info.message
    );
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future a closure returns, without calling it.
    fn future_size<A, F, Fut>(_: &F) -> usize
    where
        F: Fn(A) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// A worker holds one task per prefetched delivery (twice its concurrency), each as large
    /// as the handler's future: its largest await, inline. The publisher's futures (about
    /// 4 KiB, lapin's and the timeouts') live on the heap, so a delivery's task stays small.
    #[tokio::test(start_paused = true)]
    async fn an_outcome_not_reported_is_tried_again_in_place_as_a_redelivery() {
        let calls = std::cell::RefCell::new(Vec::new());
        let done = patiently(|again| {
            calls.borrow_mut().push(again);
            let n = calls.borrow().len();
            async move {
                if n < 3 {
                    Disposition::Requeue("the journal is away".into())
                } else {
                    Disposition::Ack
                }
            }
        })
        .await;
        assert!(matches!(done, Disposition::Ack));
        assert_eq!(*calls.borrow(), [false, true, true]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_outcome_never_reported_goes_back_after_its_patience() {
        let started = tokio::time::Instant::now();
        let mut tries = 0;
        let done = patiently(|_| {
            tries += 1;
            async { Disposition::Requeue("the broker does not confirm".into()) }
        })
        .await;
        assert!(matches!(done, Disposition::Requeue(_)));
        // Pauses of 1, 2, 4, 8, 15 and 15 s: six tries again, within the 45 s.
        assert_eq!(tries, 7);
        assert_eq!(started.elapsed(), Duration::from_secs(45));
    }

    #[test]
    fn a_delivery_task_stays_small() {
        let handle = future_size(&|(h, d): (Arc<Handler>, Delivery)| h.handle(d));
        assert!(
            handle <= 6 * 1024,
            "the handler's future takes {handle} bytes"
        );
        let publish = future_size(&|(h, e): (Arc<Handler>, Event)| async move {
            let _ = messages::publish_events(&h.publisher, &[&e], None).await;
        });
        assert!(publish <= 1024, "a publish's future takes {publish} bytes");
    }
}
