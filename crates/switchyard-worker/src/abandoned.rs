//! Commands the broker gave up on: the consumer of `switchyard.abandoned.{kind}`.
//!
//! A work queue's delivery limit (the crash-loop guard, `amqp.delivery_limit`) makes the
//! broker dead-letter a command handed out too often without an acknowledgement: workers that
//! crashed on it, or were stopped or cut off while they held it. The broker does that on its
//! own, so no worker decided anything and the core app would wait forever for an outcome. This
//! queue, bound on `switchyard.dead` beside the kind's DLQ, gets a copy of every dead letter;
//! for each one the broker moved at the delivery limit, a worker decides the command's outcome
//! from the journal, without calling the provider (design note 0001):
//!
//! - never begun: `failed`, class `permanent`, code `delivery_limit`: it never reached the
//!   provider, and a replay from the DLQ runs it;
//! - begun and never decided: `unknown` (the provider may have acted), ended by a status check
//!   where the provider offers one, or by an operator;
//! - decided: that decision is carried out again (its events re-sent).
//!
//! The original stays in the DLQ for `switchyard dlq`. The workers' own dead letters, which
//! had their events when they were decided, are acknowledged and dropped here.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use switchyard_amqp::lapin::options::BasicAckOptions;
use switchyard_amqp::messages::ERROR_CLASS_HEADER;
use switchyard_amqp::topology::{abandoned_queue, dead_letter_queue};
use switchyard_amqp::{
    Broker, ConsumeSettings, Delivery, HeaderRead, broker_death_reason, consume,
};
use switchyard_config::Config;
use switchyard_core::command::sniff_id;
use switchyard_core::{ErrorClass, ErrorInfo, Lifecycle};
use switchyard_journal::{Begin, Step};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, info, warn};

use crate::handler::{
    Check, Disposition, Handler, Refused, outgoing_traceparent, patiently, requeue_after_a_pause,
    unreadable_decision,
};
use crate::plan::Plan;

/// The error code of the outcome of a command the broker dead-lettered at its delivery limit.
pub const DELIVERY_LIMIT_CODE: &str = "delivery_limit";

const COUNTER: &str = "switchyard_abandoned_total";

/// What became of a command the broker gave up on (the `outcome` label).
const OUTCOMES: [&str; 5] = ["failed", "unknown", "resent", "invalid", "check"];

/// Consumes the kind's abandoned queue until `shutdown` (a task for the worker's consumer set).
pub(crate) fn run(
    handler: Arc<Handler>,
    broker: Broker,
    config: &Config,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    for outcome in OUTCOMES {
        switchyard_telemetry::labels::zero_counter(
            COUNTER,
            &[
                ("kind", handler.kind.to_string()),
                ("outcome", outcome.into()),
            ],
        );
    }
    let settings = ConsumeSettings {
        queue: abandoned_queue(&handler.kind),
        // Rare messages: a few in flight is plenty, and leaves the rest to other workers.
        prefetch: config.amqp.prefetch.unwrap_or(16).min(16),
        grace: Duration::from_millis(config.worker.shutdown_grace_ms),
    };
    consume(broker, settings, shutdown, move |d| {
        handler.clone().handle_abandoned(d)
    })
}

/// Whether the broker itself dead-lettered this message at a queue's delivery limit (and not
/// a worker, whose dead letters carry their error class).
fn at_delivery_limit(headers: &Option<switchyard_amqp::lapin::types::FieldTable>) -> bool {
    headers.header_str(ERROR_CLASS_HEADER).is_none()
        && broker_death_reason(headers).is_some_and(|reason| reason == "delivery_limit")
}

impl Handler {
    /// Settles one delivery of the abandoned queue: acknowledged once the outcome is confirmed;
    /// tried again in place while it cannot be reported, as a work queue's delivery is, since
    /// this queue's own delivery limit drops the copy after a few returns; then requeued.
    pub(crate) async fn handle_abandoned(self: Arc<Self>, delivery: Delivery) {
        let span = switchyard_amqp::spans::process_span(&delivery);
        let disposition =
            patiently(|_again| self.abandoned(&delivery).instrument(span.clone())).await;
        let settled = match disposition {
            Disposition::Ack => delivery.acker.ack(BasicAckOptions::default()).await,
            Disposition::Requeue(e) => {
                warn!(error = %e, "could not report the outcome of a command the broker dead-lettered; leaving it for redelivery");
                requeue_after_a_pause(&delivery).await
            }
        };
        if let Err(e) = settled {
            warn!(error = %e, "could not settle an abandoned delivery; it will be redelivered");
        }
    }

    async fn abandoned(&self, delivery: &Delivery) -> Disposition {
        let headers = delivery.properties.headers();
        if !at_delivery_limit(headers) {
            return Disposition::Ack;
        }
        let previous = crate::handler::attempts_before(headers).unwrap_or(0);
        let tp = outgoing_traceparent(headers);
        let tp = tp.as_deref();
        if Check::read(headers).is_some() {
            // A status check's chain ends here. The wait stays with the resolver: its deadline
            // (`waiting`) or an operator (`unknown`, `switchyard resolve`) ends the command.
            warn!(
                command_id = ?sniff_id(&delivery.data),
                dlq = %dead_letter_queue(&self.kind),
                "the broker dead-lettered a status check at its delivery limit; the command waits for its deadline or an operator"
            );
            self.count_abandoned(&Disposition::Ack, "check");
            return Disposition::Ack;
        }
        let (command, slot) = match self.decode(delivery, false).map_err(|refused| *refused) {
            Ok((command, slot)) => (command, Some(slot)),
            // Readable, refused only by this configuration: its outcome is found in the journal
            // like any other's (a step begun under another configuration is carried on).
            Err(Refused {
                readable: Some(readable),
                ..
            }) => readable,
            // Its workers never got as far as rejecting it: do it now, as they would have.
            Err(refused) => {
                let done = self
                    .reject_invalid(delivery, refused.invalid, previous, tp)
                    .await;
                self.count_abandoned(&done, "invalid");
                return done;
            }
        };
        tracing::Span::current().record("command_id", tracing::field::display(command.id));
        let run = crate::handler::run_of(headers);
        let step = Step {
            command_id: command.id,
            run,
            attempt: previous + 1,
        };
        let begun = match self.begin_step(delivery, &command, step, true, tp).await {
            Ok(b) => b,
            Err(done) => return done,
        };
        let now = Utc::now();
        let lifecycle = Lifecycle::run(&command, run);
        let dlq = dead_letter_queue(&self.kind);
        let (plan, outcome) = match begun {
            // The step row is this delivery's now; until its decision is stored, a crash makes
            // the redelivery find it in doubt and report `unknown`: never wrong, less precise.
            Begin::Fresh => {
                let error = ErrorInfo::new(
                    ErrorClass::Permanent,
                    DELIVERY_LIMIT_CODE,
                    format!(
                        "the broker dead-lettered the command at its delivery limit: it was \
                         handed out too often without an outcome (workers crashed on it, or \
                         were stopped while they held it); it never reached the provider, and \
                         a replay from {dlq} runs it"
                    ),
                );
                let event = lifecycle.reject(previous, error, now);
                (Plan::Report { event }, "failed")
            }
            Begin::InDoubt => {
                let error = ErrorInfo::new(
                    ErrorClass::Unknown,
                    DELIVERY_LIMIT_CODE,
                    "the broker dead-lettered the command at its delivery limit after a worker \
                     began calling the provider: whether the provider acted is not known",
                );
                let (attempt, _processing) = lifecycle.begin(step.attempt, now);
                (self.unknown_plan(&command, attempt, error, now), "unknown")
            }
            // Decided, and its worker stopped before acknowledging, again and again: carry the
            // decision out. A dead letter is already in the DLQ (the broker's copy).
            Begin::Decided(text) => {
                let done = match Plan::decode(&text) {
                    Some(Plan::DeadLetter { event, .. }) => self.finish(&event, tp).await,
                    Some(plan) => self.execute(delivery, &command, slot, &plan, tp).await,
                    None => unreadable_decision(step),
                };
                self.count_abandoned(&done, "resent");
                return done;
            }
            // A later step exists: the command went on.
            Begin::Repeated | Begin::Superseded => return Disposition::Ack,
        };
        let done = self.settle(delivery, &command, slot, step, &plan, tp).await;
        if matches!(done, Disposition::Ack) {
            info!(command_id = %command.id, run, attempt = step.attempt, outcome, %dlq, "reported the outcome of a command the broker dead-lettered at its delivery limit");
        }
        self.count_abandoned(&done, outcome);
        done
    }

    fn count_abandoned(&self, done: &Disposition, outcome: &'static str) {
        if matches!(done, Disposition::Ack) {
            metrics::counter!(COUNTER, "kind" => self.kind.to_string(), "outcome" => outcome)
                .increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_amqp::lapin::types::{AMQPValue, FieldArray, FieldTable};

    fn death(reason: &str) -> AMQPValue {
        let mut t = FieldTable::default();
        t.insert("reason".into(), AMQPValue::LongString(reason.into()));
        t.insert(
            "queue".into(),
            AMQPValue::LongString("switchyard.work.payment.stripe".into()),
        );
        AMQPValue::FieldTable(t)
    }

    fn headers(deaths: &[&str], class: Option<&str>) -> Option<FieldTable> {
        let mut t = FieldTable::default();
        t.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(
                deaths.iter().map(|r| death(r)).collect::<Vec<_>>(),
            )),
        );
        if let Some(c) = class {
            t.insert(ERROR_CLASS_HEADER.into(), AMQPValue::LongString(c.into()));
        }
        Some(t)
    }

    #[test]
    fn only_what_the_broker_dead_lettered_at_the_limit_is_answered() {
        // The latest death comes first: a retry that waited in a delay tier (`expired`), then
        // crash-looped.
        assert!(at_delivery_limit(&headers(
            &["delivery_limit", "expired"],
            None
        )));
        // A delayed retry that is back, or a worker's own dead letter of it.
        assert!(!at_delivery_limit(&headers(
            &["expired", "delivery_limit"],
            None
        )));
        assert!(!at_delivery_limit(&headers(
            &["delivery_limit"],
            Some("permanent")
        )));
        assert!(!at_delivery_limit(&None));
        assert!(!at_delivery_limit(&headers(&[], None)));
    }
}
